import type { ServerResponse } from 'node:http';
import type { WebSocket } from 'ws';

// How full a client transport is, and when it has written out what it held: what the engine's
// flow control (engine/output-fanout.ts) needs from an HTTP response or a WebSocket.

export interface TransportFlow {
  /** Bytes handed to the transport that the client has not taken yet. */
  backlog(): number;
  /** Call `cb` once, when the transport is empty again (or closed: nothing is left to wait for). */
  onDrain(cb: () => void): void;
}

function once(cb: () => void): () => void {
  let called = false;
  return () => {
    if (called) return;
    called = true;
    cb();
  };
}

/** An HTTP response (SSE, a Connect stream): Node emits 'drain' after a refused write, 'finish' after end. */
export function responseFlow(res: ServerResponse): TransportFlow {
  return {
    backlog: () => res.writableLength,
    onDrain(cb) {
      const fire = once(cb);
      if (res.writableLength === 0 || res.destroyed) return void setImmediate(fire);
      res.once('drain', fire);
      res.once('finish', fire);
      res.once('close', fire);
    },
  };
}

/**
 * Cut off a response (a download) whose client takes nothing for `ms` while bytes wait for it. Its
 * source is already paused by backpressure, so memory is bounded; this bounds the time a stalled
 * client holds what feeds it (a helper process inside the sandbox).
 */
export function stallDeadline(res: ServerResponse, ms: number): void {
  let sent = -1;
  const timer = setInterval(() => {
    const now = res.socket?.bytesWritten ?? 0;
    if (res.writableLength > 0 && now === sent) res.destroy();
    sent = now;
  }, ms);
  timer.unref();
  res.once('close', () => clearInterval(timer));
}

/**
 * A WebSocket. ws calls a send's callback once that frame is written to the socket; frames go out in
 * order, so when the callback of the latest send has run, everything sent before it is out too.
 */
export class SocketFlow implements TransportFlow {
  private sent = 0;
  private written = 0;
  private waiters: { upTo: number; cb: () => void }[] = [];

  constructor(private readonly socket: WebSocket) {}

  send(text: string): void {
    if (this.socket.readyState !== this.socket.OPEN) return;
    this.sent++;
    this.socket.send(text, () => {
      this.written++;
      const ready = this.waiters.filter((w) => w.upTo <= this.written);
      this.waiters = this.waiters.filter((w) => w.upTo > this.written);
      for (const w of ready) w.cb();
    });
  }

  backlog(): number {
    return this.socket.bufferedAmount;
  }

  onDrain(cb: () => void): void {
    if (this.written >= this.sent) return void setImmediate(cb);
    this.waiters.push({ upTo: this.sent, cb });
  }
}
