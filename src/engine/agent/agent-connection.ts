// One connection from a sandbox's agent: frames in and out, requests with deadlines, and the
// channels that carry bytes (process output, stdin, file contents) and watch events under credit.
// The peer is untrusted: every frame is checked, the first one that breaks a rule ends the
// connection with a ProtocolError, and nothing it sends can make the daemon buffer beyond the
// credit it granted.
import type { Socket } from 'node:net';
import type { z } from 'zod';
import { FRAME, FrameDecoder, HEADER_LEN, MAX_DATA, MAX_PAYLOAD, ProtocolError, ackPayload, encodeFrame, readAck, type Frame } from './frame-codec.js';
import { CordonError } from '../../errors/registry.js';
import { AgentOpError, unavailable, type CloseKind, type ConnectionHooks, type EventHandlers, type InboundChannel, type InboundHandlers, type Json, type OutboundChannel } from './connection-types.js';
import { agentError, channelError, exitMessage, hello, watchEvents, type Hello } from './messages.js';

/** Bytes written to the agent that it has not read yet, past which it counts as stuck. */
const MAX_WRITE_BACKLOG = 16 * 1024 * 1024;
/** Replies to requests that already timed out, tolerated per connection. */
const MAX_LATE_REPLIES = 1000;
/** Bytes (or events) tolerated on a channel after the daemon closed it: what was in flight. */
const CLOSED_CHANNELS_KEPT = 1024;

interface Pending {
  resolve(v: Json): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
  timeoutMs: number;
  onPartial?: (m: Json) => void;
}

type Channel =
  | { kind: 'in'; window: number; received: number; acked: number; h: InboundHandlers }
  | { kind: 'out'; window: number; sent: number; limit: number; wake?: () => void }
  | { kind: 'events'; window: number; received: number; acked: number; h: EventHandlers };

export class AgentConnection {
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private readonly channels = new Map<number, Channel>();
  /** Recently closed channels and what may still arrive on them. */
  private readonly closedAllowance = new Map<number, number>();
  private nextId = 1;
  private greeted = false;
  private lateReplies = 0;
  private ended = false;
  helloInfo?: Hello;

  constructor(
    private readonly socket: Socket,
    private readonly hooks: ConnectionHooks,
    private readonly allocChannel: () => number,
  ) {
    socket.on('data', (d: Buffer) => {
      try {
        this.decoder.push(d, (f) => this.onFrame(f));
      } catch (e) {
        this.fail(e as Error);
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => this.end('the agent closed its connection', 'closed'));
  }

  get isOpen(): boolean {
    return !this.ended;
  }

  /** Send a request; resolves with the reply (fields besides id), rejects on an errno or the deadline. */
  request<T extends z.ZodTypeAny>(
    msg: Json,
    schema: T,
    opts: { timeoutMs: number; onPartial?: (m: Json) => void; progress?: (refresh: () => void) => void },
  ): Promise<z.infer<T>> {
    if (this.ended) return Promise.reject(unavailable('the agent connection closed'));
    const id = this.nextId++;
    return new Promise<Json>((resolve, reject) => {
      const p: Pending = {
        resolve,
        reject,
        timeoutMs: opts.timeoutMs,
        onPartial: opts.onPartial,
        timer: setTimeout(() => this.timeout(id, String(msg.op)), opts.timeoutMs),
      };
      p.timer.unref();
      this.pending.set(id, p);
      // Long operations (a big upload) restart the deadline as they make progress.
      opts.progress?.(() => p.timer.refresh());
      this.sendJson({ ...msg, id });
    }).then((reply) => {
      const r = schema.safeParse(reply);
      if (!r.success) {
        const issue = r.error.issues[0];
        const why = `reply to ${String(msg.op)}: ${issue?.path.join('.') || '(message)'} ${issue?.message}`;
        this.fail(new ProtocolError(why));
        throw unavailable(`the sandbox's agent sent an invalid reply (${why})`);
      }
      return r.data;
    });
  }

  private timeout(id: number, op: string): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    p.reject(unavailable(`the sandbox's agent did not answer ${op} within ${Math.round(p.timeoutMs / 1000)}s`));
    // An agent that does not answer is stuck or lying: hang up; the exec path takes over.
    this.end(`it did not answer ${op} within ${Math.round(p.timeoutMs / 1000)}s`, 'hung');
  }

  sendJson(msg: Json): void {
    const body = Buffer.from(JSON.stringify(msg));
    if (body.length > MAX_PAYLOAD) throw new CordonError('invalid_argument', 'request too large for the agent protocol');
    this.write(encodeFrame(FRAME.json, 0, body));
  }

  private write(buf: Buffer): void {
    if (this.ended) return;
    this.socket.write(buf);
    if (this.socket.writableLength > MAX_WRITE_BACKLOG) this.close(`it stopped reading (${this.socket.writableLength} bytes waiting)`);
  }

  /** A data frame as its header and the caller's bytes, written together (writev), without a copy. */
  private writeData(channel: number, payload: Buffer): void {
    if (this.ended) return;
    const head = Buffer.allocUnsafe(HEADER_LEN);
    head.writeUInt32BE(payload.length, 0);
    head.writeUInt8(FRAME.data, 4);
    head.writeUInt32BE(channel >>> 0, 5);
    this.socket.cork();
    this.socket.write(head);
    this.socket.write(payload);
    this.socket.uncork();
    if (this.socket.writableLength > MAX_WRITE_BACKLOG) this.close(`it stopped reading (${this.socket.writableLength} bytes waiting)`);
  }

  openIn(window: number, h: InboundHandlers): InboundChannel {
    const id = this.allocChannel();
    const ch: Channel = { kind: 'in', window, received: 0, acked: 0, h };
    this.channels.set(id, ch);
    return {
      id,
      ack: (offset: number) => {
        if (this.channels.get(id) !== ch || offset <= ch.acked) return;
        ch.acked = offset;
        this.write(encodeFrame(FRAME.ack, id, ackPayload(offset)));
      },
      close: () => this.closeChannel(id, ch),
    };
  }

  /** An inbound channel whose offsets continue at `start` (a re-attached process stream). */
  openInAt(window: number, start: number, h: InboundHandlers): InboundChannel {
    const c = this.openIn(window, h);
    const ch = this.channels.get(c.id);
    if (ch?.kind === 'in') ch.received = ch.acked = start;
    return c;
  }

  /** Re-base an inbound channel once the agent said where it starts (before any byte arrives on it). */
  rebase(id: number, start: number): void {
    const ch = this.channels.get(id);
    if (ch?.kind === 'in' && ch.received === ch.acked) ch.received = ch.acked = start;
  }

  openOut(window: number): OutboundChannel {
    const id = this.allocChannel();
    const ch: Channel = { kind: 'out', window, sent: 0, limit: window };
    this.channels.set(id, ch);
    return {
      id,
      write: async (chunk: Buffer) => {
        for (let off = 0; off < chunk.length; ) {
          while (ch.sent >= ch.limit) {
            if (this.ended || this.channels.get(id) !== ch) throw unavailable('the agent connection closed');
            await new Promise<void>((r) => (ch.wake = r));
          }
          if (this.ended || this.channels.get(id) !== ch) throw unavailable('the agent connection closed');
          const n = Math.min(chunk.length - off, ch.limit - ch.sent, MAX_DATA);
          this.writeData(id, chunk.subarray(off, off + n));
          ch.sent += n;
          off += n;
        }
      },
      end: () => {
        if (this.channels.get(id) === ch) this.write(encodeFrame(FRAME.eof, id));
      },
      close: () => this.closeChannel(id, ch),
    };
  }

  openEvents(window: number, h: EventHandlers): InboundChannel {
    const id = this.allocChannel();
    const ch: Channel = { kind: 'events', window, received: 0, acked: 0, h };
    this.channels.set(id, ch);
    return {
      id,
      ack: (count: number) => {
        if (this.channels.get(id) !== ch || count <= ch.acked) return;
        ch.acked = count;
        this.write(encodeFrame(FRAME.ack, id, ackPayload(count)));
      },
      close: () => this.closeChannel(id, ch),
    };
  }

  private closeChannel(id: number, ch: Channel): void {
    if (this.channels.get(id) !== ch) return;
    this.channels.delete(id);
    if (ch.kind === 'out') ch.wake?.();
    // What the agent sent before it learned of the close may still come: data within the credit granted
    // on a channel it wrote to; acks (or a write's error) on one the daemon wrote to, such as an upload
    // refused mid-way. Either is tolerated, not a protocol violation that would end the connection.
    this.closedAllowance.set(id, ch.kind === 'out' ? 0 : ch.window);
    if (this.closedAllowance.size > CLOSED_CHANNELS_KEPT) this.closedAllowance.delete(this.closedAllowance.keys().next().value!);
  }

  /** What arrives for a channel the daemon no longer reads: tolerated up to what was granted. */
  private lateOnClosed(id: number, amount: number, what: string): void {
    const left = this.closedAllowance.get(id);
    if (left === undefined || left < amount) throw new ProtocolError(`${what} on channel ${id}, which is not open`);
    this.closedAllowance.set(id, left - amount);
  }

  private onFrame(f: Frame): void {
    if (this.ended) return;
    if (!this.greeted && f.type !== FRAME.json) throw new ProtocolError('the first frame must be the hello');
    switch (f.type) {
      case FRAME.json:
        return this.onJson(f.payload);
      case FRAME.data: {
        const ch = this.channels.get(f.channel);
        if (!ch) return this.lateOnClosed(f.channel, f.payload.length, 'data');
        if (ch.kind !== 'in') throw new ProtocolError(`data on channel ${f.channel}, which carries no data to the daemon`);
        if (ch.received + f.payload.length - ch.acked > ch.window) throw new ProtocolError(`channel ${f.channel}: more data than the ${ch.window} bytes of credit granted`);
        ch.received += f.payload.length;
        ch.h.data(f.payload);
        return;
      }
      case FRAME.eof: {
        const ch = this.channels.get(f.channel);
        if (!ch) return this.lateOnClosed(f.channel, 0, 'end of stream');
        if (ch.kind !== 'in') throw new ProtocolError(`end of stream on channel ${f.channel}, which carries no data to the daemon`);
        this.channels.delete(f.channel);
        this.closedAllowance.set(f.channel, 0);
        ch.h.eof();
        return;
      }
      case FRAME.ack: {
        const off = readAck(f.payload);
        const ch = this.channels.get(f.channel);
        if (!ch) return this.lateOnClosed(f.channel, 0, 'ack');
        if (ch.kind !== 'out') throw new ProtocolError(`ack on channel ${f.channel}, which the daemon does not send on`);
        if (off > ch.sent) throw new ProtocolError(`channel ${f.channel}: ack of ${off} bytes beyond the ${ch.sent} sent`);
        ch.limit = Math.max(ch.limit, off + ch.window);
        const wake = ch.wake;
        ch.wake = undefined;
        wake?.();
        return;
      }
    }
  }

  private onJson(payload: Buffer): void {
    let msg: unknown;
    try {
      msg = JSON.parse(payload.toString('utf8'));
    } catch {
      throw new ProtocolError('a message that is not JSON');
    }
    if (!msg || typeof msg !== 'object' || Array.isArray(msg)) throw new ProtocolError('a message that is not a JSON object');
    const m = msg as Json;
    if (!this.greeted) {
      const h = hello.safeParse(m);
      if (!h.success) throw new ProtocolError(`the first message must be a valid hello (${h.error.issues[0]?.path.join('.')} ${h.error.issues[0]?.message})`);
      const ids = new Set(h.data.processes.map((p) => p.proc));
      if (ids.size !== h.data.processes.length) throw new ProtocolError('the hello lists a process twice');
      this.greeted = true;
      this.helloInfo = h.data;
      this.hooks.hello(h.data);
      return;
    }
    if (typeof m.id === 'number') return this.onReply(m.id, m);
    switch (m.op) {
      case 'exit': {
        const e = exitMessage.safeParse(m);
        if (!e.success) throw new ProtocolError(`invalid exit message: ${e.error.issues[0]?.message}`);
        return this.hooks.exit(e.data);
      }
      case 'wev': {
        const w = watchEvents.safeParse(m);
        if (!w.success) throw new ProtocolError(`invalid watch events: ${w.error.issues[0]?.path.join('.')} ${w.error.issues[0]?.message}`);
        const ch = this.channels.get(w.data.ch);
        if (!ch) return this.lateOnClosed(w.data.ch, w.data.events.length, 'watch events');
        if (ch.kind !== 'events') throw new ProtocolError(`watch events on channel ${w.data.ch}, which is no watch`);
        if (ch.received + w.data.events.length - ch.acked > ch.window) throw new ProtocolError(`watch ${w.data.ch}: more events than the ${ch.window} granted`);
        ch.received += w.data.events.length;
        return ch.h.events(w.data.events);
      }
      case 'chErr': {
        const c = channelError.safeParse(m);
        if (!c.success) throw new ProtocolError(`invalid channel error: ${c.error.issues[0]?.message}`);
        const ch = this.channels.get(c.data.ch);
        if (!ch) return this.lateOnClosed(c.data.ch, 0, 'channel error');
        if (ch.kind === 'out') throw new ProtocolError(`channel error on channel ${c.data.ch}, which the daemon sends on`);
        this.channels.delete(c.data.ch);
        this.closedAllowance.set(c.data.ch, 0);
        ch.h.error(c.data.error);
        return;
      }
      default:
        throw new ProtocolError(`unknown message ${JSON.stringify(String(m.op)).slice(0, 40)}`);
    }
  }

  private onReply(id: number, m: Json): void {
    const p = this.pending.get(id);
    if (!p) {
      if (!Number.isSafeInteger(id) || id <= 0 || id >= this.nextId) throw new ProtocolError(`a reply to request ${id}, which was never sent`);
      if (++this.lateReplies > MAX_LATE_REPLIES) throw new ProtocolError('too many replies to requests that had already timed out');
      return;
    }
    const { id: _id, more, error, ...rest } = m;
    if (more === true) {
      if (!p.onPartial) throw new ProtocolError(`a partial reply to request ${id}, which takes none`);
      // Progress: the deadline starts again.
      p.timer.refresh();
      p.onPartial(rest);
      return;
    }
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (error !== undefined) {
      const e = agentError.safeParse(error);
      if (!e.success) throw new ProtocolError('a reply with an invalid error');
      p.reject(new AgentOpError(e.data.errno, e.data.message));
      return;
    }
    p.resolve(rest);
  }

  /** The agent broke the protocol: end the connection. */
  fail(e: Error): void {
    this.end(e instanceof ProtocolError ? e.message : `protocol error: ${e.message}`, 'violation');
  }

  close(reason: string): void {
    this.end(reason, 'closed');
  }

  private end(reason: string, kind: CloseKind): void {
    if (this.ended) return;
    this.ended = true;
    this.socket.destroy();
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(unavailable(`the sandbox's agent went away (${reason}); retry`));
    }
    this.pending.clear();
    const channels = [...this.channels.values()];
    this.channels.clear();
    for (const ch of channels) {
      if (ch.kind === 'out') ch.wake?.();
      else ch.h.lost?.(reason);
    }
    this.hooks.closed(reason, kind);
  }
}
