import type { CallbackDecision, CallbackSummary } from './callback-protocol.js';

export type { CallbackDecision, CallbackSummary } from './callback-protocol.js';

// SDK-side interception callbacks (matchlock's hook callbacks): a request that matches a rule with
// action `callback` is summarised and sent to the client connected for its sandbox; the daemon waits
// up to the rule's timeout for a decision, else the rule's on_timeout action applies.

export interface CallbackSocket {
  send(data: string): void;
}

export type AskResult = { decision: CallbackDecision } | { none: string };

export class CallbackHub {
  private readonly clients = new Map<string, CallbackSocket[]>();
  private readonly pending = new Map<number, { socket: CallbackSocket; done: (r: AskResult) => void }>();
  private seq = 0;

  register(sandboxId: string, s: CallbackSocket): () => void {
    this.clients.set(sandboxId, [...(this.clients.get(sandboxId) ?? []), s]);
    return () => {
      const left = (this.clients.get(sandboxId) ?? []).filter((x) => x !== s);
      if (left.length) this.clients.set(sandboxId, left);
      else this.clients.delete(sandboxId);
      for (const [id, p] of this.pending) if (p.socket === s) p.done({ none: 'the callback client disconnected' });
    };
  }

  /** A decision from a client: `{type: 'decision', id, action, …}`. Unknown or late ids are ignored. */
  answer(s: CallbackSocket, msg: { id?: unknown } & Partial<CallbackDecision>): void {
    const p = typeof msg.id === 'number' ? this.pending.get(msg.id) : undefined;
    if (!p || p.socket !== s) return;
    const action = msg.action === 'allow' || msg.action === 'block' || msg.action === 'mutate' ? msg.action : undefined;
    if (!action) return p.done({ none: `the callback answered an unknown action ${String(msg.action)}` });
    p.done({ decision: { ...msg, action } as CallbackDecision });
  }

  /** Ask the most recently connected client of the sandbox; no client or no answer in time → none. */
  ask(sandboxId: string, summary: CallbackSummary, timeoutMs: number): Promise<AskResult> {
    const list = this.clients.get(sandboxId);
    const socket = list?.[list.length - 1];
    if (!socket) return Promise.resolve({ none: 'no callback client is connected' });
    const id = ++this.seq;
    return new Promise<AskResult>((resolve) => {
      const timer = setTimeout(() => done({ none: `the callback did not answer within ${timeoutMs} ms` }), timeoutMs);
      const done = (r: AskResult) => {
        if (!this.pending.delete(id)) return;
        clearTimeout(timer);
        resolve(r);
      };
      this.pending.set(id, { socket, done });
      try {
        socket.send(JSON.stringify({ type: 'request', id, timeout_ms: timeoutMs, ...summary }));
      } catch {
        done({ none: 'the callback client is gone' });
      }
    });
  }
}
