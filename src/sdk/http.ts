import { Agent, request } from 'undici';
import type { Readable } from 'node:stream';
import { CordonError, codeForStatus, type ErrorCode } from '../errors/registry.js';

export interface ClientOptions {
  /** Daemon address; default $CORDON_URL or http://127.0.0.1:7070. */
  url?: string;
  /** Default $CORDON_API_KEY. */
  apiKey?: string;
}

/** Thin HTTP layer: JSON in and out, daemon errors rebuilt as typed CordonErrors. */
export class Http {
  readonly base: string;
  private readonly apiKey?: string;
  private readonly agent = new Agent({ keepAliveTimeout: 10_000, connections: 64 });

  constructor(opts: ClientOptions = {}) {
    this.base = (opts.url ?? process.env.CORDON_URL ?? 'http://127.0.0.1:7070').replace(/\/$/, '');
    this.apiKey = opts.apiKey ?? process.env.CORDON_API_KEY ?? undefined;
  }

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {}), ...extra };
  }

  async raw(method: string, path: string, opts: { body?: string | Buffer | Readable; contentType?: string; query?: Record<string, string | number | boolean | undefined>; signal?: AbortSignal } = {}) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) qs.append(k, String(v));
    const url = `${this.base}${path}${qs.size ? `?${qs}` : ''}`;
    let res;
    try {
      res = await request(url, {
        method: method as 'GET',
        body: opts.body,
        headers: this.headers(opts.body !== undefined ? { 'content-type': opts.contentType ?? 'application/json' } : {}),
        dispatcher: this.agent,
        headersTimeout: 0,
        bodyTimeout: 0,
        signal: opts.signal,
      });
    } catch (e) {
      if (opts.signal?.aborted) throw e; // the caller's own cancellation, not an unreachable daemon
      throw new CordonError('unavailable', `cannot reach the cordon daemon at ${this.base} (${(e as Error).message}); start it with \`cordon serve\` or set CORDON_URL`);
    }
    if (res.statusCode >= 400) {
      const text = await res.body.text();
      let parsed: { code?: string; message?: string; details?: Record<string, unknown> } = {};
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = { message: text };
      }
      const code = (parsed.code as ErrorCode) ?? codeForStatus(res.statusCode);
      throw new CordonError(code, parsed.message ?? `HTTP ${res.statusCode}`, parsed.details);
    }
    return res;
  }

  async json<T>(method: string, path: string, body?: unknown, query?: Record<string, string | number | boolean | undefined>): Promise<T> {
    const res = await this.raw(method, path, { body: body === undefined ? undefined : JSON.stringify(body), query });
    if (res.statusCode === 204) {
      await res.body.dump();
      return undefined as T;
    }
    return (await res.body.json()) as T;
  }

  wsUrl(path: string): string {
    return `${this.base.replace(/^http/, 'ws')}${path}`;
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}
