import WebSocket from 'ws';
import { CordonError, ERROR_KINDS, type ErrorCode } from '../errors/registry.js';
import type { Http } from './http.js';
import type { ProcessEvent } from './types.js';

type Wire = { type: string; data?: string; pid?: number; exit_code?: number; signal?: string | null; timed_out?: boolean; oom_killed?: boolean; code?: string; message?: string };

export function fromWire(w: Wire): ProcessEvent | undefined {
  if (w.type === 'stdout' || w.type === 'stderr' || w.type === 'pty') return { type: w.type, data: Buffer.from(w.data ?? '', 'base64') };
  if (w.type === 'start') return { type: 'start', pid: w.pid ?? 0 };
  if (w.type === 'exit') return { type: 'exit', exit_code: w.exit_code ?? -1, signal: w.signal ?? null, timed_out: !!w.timed_out, oom_killed: !!w.oom_killed };
  return undefined;
}

/**
 * Read a Server-Sent Events response body into process events. A stream that ends without an exit
 * event was cut: the daemon says why in an error event (e.g. sandbox_gone), which is thrown.
 */
export async function* readSse(body: AsyncIterable<Buffer | string>): AsyncGenerator<ProcessEvent> {
  let buf = '';
  let exited = false;
  let failure: CordonError | undefined;
  try {
    for await (const chunk of body) {
      buf += chunk.toString();
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
        if (!data) continue;
        const w = JSON.parse(data) as Wire;
        if (w.type === 'error') failure = new CordonError(knownCode(w.code), w.message ?? 'the stream was cut');
        const ev = fromWire(w);
        if (ev?.type === 'exit') exited = true;
        if (ev) yield ev;
      }
    }
  } catch (e) {
    throw failure ?? new CordonError('unavailable', `the event stream broke before the process exited (${(e as Error).message})`);
  }
  if (!exited) throw failure ?? new CordonError('unavailable', 'the event stream ended before the process exited');
}

const knownCode = (code: string | undefined): ErrorCode => (code && code in ERROR_KINDS ? (code as ErrorCode) : 'internal');

/** A live, two-way connection to a process: events in, stdin / resize / signals out. */
export class ProcessSocket {
  private constructor(private readonly ws: WebSocket) {}

  static open(http: Http, path: string, onEvent: (ev: ProcessEvent) => void, first?: unknown): Promise<{ socket: ProcessSocket; done: Promise<ProcessEvent & { type: 'exit' }> }> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(http.wsUrl(path), { headers: http.headers() });
      let exit: (ProcessEvent & { type: 'exit' }) | undefined;
      let failure: Error | undefined;
      const done = new Promise<ProcessEvent & { type: 'exit' }>((res, rej) => {
        ws.on('message', (raw) => {
          const w = JSON.parse(raw.toString()) as Wire;
          if (w.type === 'error') {
            failure = Object.assign(new Error(w.message ?? 'error'), { code: w.code });
            return;
          }
          const ev = fromWire(w);
          if (!ev) return;
          if (ev.type === 'exit') exit = ev;
          onEvent(ev);
        });
        ws.on('close', (code, reason) => (exit ? res(exit) : rej(failure ?? new Error(`connection closed (${code} ${reason.toString()})`))));
      });
      done.catch(() => {});
      ws.on('open', () => {
        if (first !== undefined) ws.send(JSON.stringify(first));
        resolve({ socket: new ProcessSocket(ws), done });
      });
      ws.on('error', reject);
    });
  }

  write(data: Buffer | string): void {
    this.ws.send(JSON.stringify({ type: 'stdin', data: Buffer.from(data).toString('base64') }));
  }
  closeStdin(): void {
    this.ws.send(JSON.stringify({ type: 'close_stdin' }));
  }
  resize(cols: number, rows: number): void {
    this.ws.send(JSON.stringify({ type: 'resize', cols, rows }));
  }
  signal(signal: string): void {
    this.ws.send(JSON.stringify({ type: 'signal', signal }));
  }
  /** Stop reading events (the daemon then pauses the process once its buffer is full). */
  pause(): void {
    this.ws.pause();
  }
  resume(): void {
    this.ws.resume();
  }
  close(): void {
    this.ws.close();
  }
}
