import { CordonError, type ErrorCode } from '../errors/registry.js';

type Terminal = { type: 'error'; error: { code: ErrorCode; message: string; details?: Record<string, unknown> } };

/**
 * Follows a daemon's ndjson progress stream (image pulls, template builds): every line but the last is
 * progress for `onEvent`; a `{type:'result'}` line carries the answer under `key`, a `{type:'error'}` line
 * is thrown as the daemon's typed error. A stream that ends without either is an error too.
 */
export async function ndjsonResult<R, E>(body: AsyncIterable<unknown>, key: string, what: string, onEvent?: (ev: E) => void): Promise<R> {
  let buf = '';
  let result: R | undefined;
  const handle = (line: string) => {
    if (!line.trim()) return;
    const ev = JSON.parse(line) as (E & { type?: string }) | Terminal | ({ type: 'result' } & Record<string, R>);
    if (ev.type === 'result') result = (ev as Record<string, R>)[key];
    else if (ev.type === 'error') {
      const { error } = ev as Terminal;
      throw new CordonError(error.code, error.message, error.details);
    } else onEvent?.(ev as E);
  };
  for await (const chunk of body) {
    buf += (chunk as Buffer).toString('utf8');
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      handle(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  }
  handle(buf);
  if (result === undefined) throw new CordonError('unavailable', `the daemon closed ${what} without a result`);
  return result;
}
