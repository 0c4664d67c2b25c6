import WebSocket from 'ws';
import type { Http } from './http.js';
import type { CallbackDecision, CallbackRequest } from '../net/callback-protocol.js';

// SDK-side interception callbacks: the daemon sends each request matching a rule with action
// `callback` over a WebSocket; the handler's decision goes back. No answer (the handler returns
// nothing, throws, or takes longer than the rule's timeout_ms) → the rule's on_timeout applies.

/** A request matching a `callback` rule, as the daemon describes it. */
export type InterceptedRequest = CallbackRequest;
export type InterceptDecision = CallbackDecision;

export type InterceptHandler = (req: InterceptedRequest) => InterceptDecision | undefined | void | Promise<InterceptDecision | undefined | void>;

export interface Interceptor {
  /** Stop answering; pending and later requests get their rule's on_timeout action. */
  close(): Promise<void>;
}

export function openInterceptor(http: Http, path: string, handler: InterceptHandler, opts: { timeoutMs?: number } = {}): Promise<Interceptor> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(http.wsUrl(path), { headers: http.headers() });
    const closed = new Promise<void>((r) => ws.once('close', () => r()));
    ws.on('message', async (raw) => {
      let msg: { type?: string; error?: { message?: string; code?: string } } & Partial<InterceptedRequest>;
      try {
        msg = JSON.parse(raw.toString());
      } catch {
        return;
      }
      if (msg.type === 'ready') return resolve({ close: async () => (ws.close(), await closed) });
      if (msg.type === 'error') return reject(Object.assign(new Error(msg.error?.message ?? 'callback registration failed'), { code: msg.error?.code }));
      if (msg.type !== 'request') return;
      const req = msg as InterceptedRequest;
      try {
        const limit = opts.timeoutMs ?? req.timeout_ms;
        let timer: NodeJS.Timeout | undefined;
        const d = await Promise.race([Promise.resolve(handler(req)), new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), limit)))]);
        clearTimeout(timer);
        if (d && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'decision', id: req.id, ...d }));
      } catch {
        /* no answer: the daemon applies the rule's on_timeout */
      }
    });
    ws.once('error', reject);
    ws.once('close', (code, reason) => reject(new Error(`callback connection closed (${code} ${reason.toString()})`)));
  });
}
