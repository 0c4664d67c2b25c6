// A process run by the sandbox's agent, as a ProcessHandle: its output arrives on inbound channels
// (acknowledged as the reader takes it, so a slow reader stops the agent reading the process's
// pipe), its stdin goes out under the agent's credit, and it survives the connection: when the
// agent reconnects (daemon restart, restore) the streams go on from the offsets already received.
import { constants } from 'node:os';
import { Readable, Writable } from 'node:stream';
import { CordonError } from '../../errors/registry.js';
import type { ExitStatus } from '../../runtime/types.js';
import type { StreamDrop } from '../output-fanout.js';
import type { ProcessHandle } from '../process-handle.js';
import type { StartFailure } from '../start-failure.js';
import type { AgentConnection } from './agent-connection.js';
import { AgentOpError, unavailable, type InboundChannel, type OutboundChannel } from './connection-types.js';
import { MAX_DATA } from './frame-codec.js';
import { replies, type HelloProcess } from './messages.js';

/** Bytes the agent may send on one output stream beyond what the daemon acknowledged. */
export const OUTPUT_WINDOW = 256 * 1024;
/** The agent's stdin credit (agent/inchan.go stdinWindow). */
export const STDIN_WINDOW = 256 * 1024;
/** Starting, signalling or re-attaching a process takes the agent milliseconds; past this it counts as hung. */
const REQUEST_TIMEOUT_MS = 10_000;

/** One output stream; `received` is the absolute offset of the next byte. */
class AgentOutput extends Readable {
  received = 0;
  /** Bytes were lost between two connections (the agent's ring had moved on). */
  gap = false;
  private channel?: InboundChannel;
  private lastAck = 0;
  private done = false;

  constructor() {
    super({ highWaterMark: 64 * 1024 });
  }

  bind(conn: AgentConnection): InboundChannel {
    const ch: InboundChannel = conn.openInAt(OUTPUT_WINDOW, this.received, {
      data: (b) => {
        this.received += b.length;
        this.push(b);
      },
      eof: () => this.finish(),
      error: () => this.finish(),
      lost: () => {
        if (this.channel === ch) this.channel = undefined;
      },
    });
    this.channel = ch;
    this.lastAck = this.received;
    return ch;
  }

  /** The agent starts this stream at `start` (later than asked when its ring no longer held it). */
  rebase(conn: AgentConnection, start: number): void {
    if (start > this.received) this.gap = true;
    this.received = start;
    this.lastAck = start;
    if (this.channel) conn.rebase(this.channel.id, start);
  }

  finish(): void {
    if (this.done) return;
    this.done = true;
    this.channel = undefined;
    this.push(null);
  }

  override _read(): void {
    if (!this.channel || this.received <= this.lastAck) return;
    if (this.received - this.lastAck >= OUTPUT_WINDOW / 4 || this.readableLength === 0) {
      this.lastAck = this.received;
      this.channel.ack(this.received);
    }
  }

  /** Acknowledge what was consumed without waiting for the next read (after a reconnect). */
  nudge(): void {
    this._read();
  }
}

const signalNumber = (sig: NodeJS.Signals): number => {
  const n = constants.signals[sig];
  if (!n) throw new CordonError('invalid_argument', `signal ${sig} is not known`);
  return n;
};

export interface AgentStartRequest {
  args: string[];
  env: string[];
  cwd: string;
  user: { uid: number; gid: number; groups: number[] };
  tty?: { cols: number; rows: number };
  nproc?: number;
  meta: unknown;
}

export class AgentProcess implements ProcessHandle {
  readonly stdout = new AgentOutput();
  readonly stderr?: AgentOutput;
  readonly stdin: Writable;
  readonly pid: Promise<number>;
  readonly exited: Promise<ExitStatus>;
  readonly startFailure: Promise<StartFailure | undefined>;
  readonly lost: Promise<StreamDrop>;
  readonly resizesNatively = true;
  private conn?: AgentConnection;
  private stdinCh?: OutboundChannel;
  private stdinEnded = false;
  /** stdin writes waiting for the agent to come back. */
  private stdinWaiters: (() => void)[] = [];
  private exitSeen = false;
  private lostSeen = false;
  private resolvePid!: (n: number) => void;
  private rejectPid!: (e: Error) => void;
  private resolveExit!: (s: ExitStatus) => void;
  private resolveFailure!: (f: StartFailure | undefined) => void;
  private resolveLost!: (d: StreamDrop) => void;

  constructor(readonly procId: string, readonly tty: boolean) {
    if (!tty) this.stderr = new AgentOutput();
    this.pid = new Promise((res, rej) => ((this.resolvePid = res), (this.rejectPid = rej)));
    this.pid.catch(() => {});
    this.exited = new Promise((res) => (this.resolveExit = res));
    this.startFailure = new Promise((res) => (this.resolveFailure = res));
    this.lost = new Promise((res) => (this.resolveLost = res));
    this.stdin = new Writable({
      highWaterMark: 64 * 1024,
      write: (chunk: Buffer, _enc, cb) => void this.writeStdin(chunk).then(() => cb(), (e: Error) => cb(e)),
      final: (cb) => {
        this.stdinEnded = true;
        this.stdinCh?.end();
        cb();
      },
    });
    this.stdin.on('error', () => {});
  }

  private outputs(): AgentOutput[] {
    return this.stderr ? [this.stdout, this.stderr] : [this.stdout];
  }

  private async writeStdin(chunk: Buffer): Promise<void> {
    for (;;) {
      if (this.exitSeen || this.lostSeen) return; // as a pipe whose reader is gone, minus the error
      const ch = this.stdinCh;
      if (ch) {
        try {
          return await ch.write(chunk);
        } catch {
          if (this.stdinCh === ch) this.stdinCh = undefined;
        }
      }
      // The agent is away: wait for it to come back (or for the process to be given up).
      await new Promise<void>((r) => this.stdinWaiters.push(r));
    }
  }

  private wakeStdin(): void {
    for (const w of this.stdinWaiters.splice(0)) w();
  }

  /** Start the process; resolves once the agent started (or could not start) it. */
  async start(conn: AgentConnection, req: AgentStartRequest): Promise<void> {
    this.conn = conn;
    const chans = this.outputs().map((o) => o.bind(conn));
    this.stdinCh = conn.openOut(STDIN_WINDOW);
    let reply;
    try {
      reply = await conn.request(
        {
          op: 'start',
          proc: this.procId,
          ...req,
          stdout: chans[0].id,
          stderr: chans[1]?.id ?? 0,
          stdin: this.stdinCh.id,
          window: OUTPUT_WINDOW,
          frame: MAX_DATA,
        },
        replies.start,
        { timeoutMs: REQUEST_TIMEOUT_MS },
      );
    } catch (e) {
      for (const c of chans) c.close();
      // A lost connection may have closed it already (and cleared it) while the start was awaited.
      this.stdinCh?.close();
      // An errno (EAGAIN: no process slot) goes up as is: the caller may start the command another way.
      throw e instanceof CordonError || e instanceof AgentOpError ? e : unavailable(`the sandbox's agent could not start the command: ${(e as Error).message}`);
    }
    if ('fail' in reply) {
      this.stdinCh?.close();
      this.stdinCh = undefined;
      this.rejectPid(new Error('the command did not start'));
      this.resolveFailure({ exitCode: reply.fail.code, message: reply.fail.message });
      for (const o of this.outputs()) o.finish();
      this.onExit(reply.fail.code, '');
      return;
    }
    this.resolvePid(reply.pid);
    this.resolveFailure(undefined);
  }

  /** Re-attach after the agent reconnected (or adopt a process a previous daemon started). */
  async attach(conn: AgentConnection, hp: HelloProcess): Promise<void> {
    this.conn = conn;
    this.resolvePid(hp.pid);
    this.resolveFailure(undefined);
    const outs = this.outputs();
    const chans = outs.map((o) => o.bind(conn));
    const wantStdin = hp.stdinOpen && !this.exitSeen;
    const stdinCh = wantStdin ? conn.openOut(STDIN_WINDOW) : undefined;
    try {
      const reply = await conn.request(
        { op: 'attach', proc: this.procId, stdout: chans[0].id, stderr: chans[1]?.id ?? 0, stdin: stdinCh?.id ?? 0, from: outs.map((o) => o.received), window: OUTPUT_WINDOW, frame: MAX_DATA },
        replies.attach,
        { timeoutMs: REQUEST_TIMEOUT_MS },
      );
      outs.forEach((o, i) => o.rebase(conn, reply.starts[i] ?? o.received));
      if (stdinCh && reply.stdin) {
        this.stdinCh = stdinCh;
        if (this.stdinEnded) stdinCh.end();
      } else stdinCh?.close();
      this.wakeStdin();
      for (const o of outs) o.nudge();
    } catch {
      // The connection went again; the next hello tries once more.
      return;
    }
    if (hp.exit) this.onExit(hp.exit.code, hp.exit.signal);
  }

  /** The connection ended: streams wait for the next one. */
  detach(): void {
    this.conn = undefined;
    this.stdinCh = undefined;
  }

  onExit(code: number, signal: string): void {
    if (this.exitSeen) return;
    this.exitSeen = true;
    this.wakeStdin();
    this.resolveExit({ exitCode: code, ...(signal ? { signal } : {}) });
  }

  /** The agent that ran the process is gone without it: its streams end without an exit status. */
  markLost(message: string): void {
    if (this.lostSeen || this.exitSeen) return;
    this.lostSeen = true;
    this.wakeStdin();
    for (const o of this.outputs()) o.finish();
    this.resolveLost({ kind: 'agent_lost', message });
  }

  get settled(): boolean {
    return this.exitSeen || this.lostSeen;
  }

  private connOrThrow(): AgentConnection {
    if (!this.conn?.isOpen) throw unavailable(`the sandbox's agent is not connected; process ${this.procId} cannot be reached until it reconnects`);
    return this.conn;
  }

  async signal(sig: NodeJS.Signals): Promise<void> {
    if (this.exitSeen) return;
    await this.connOrThrow().request({ op: 'signal', proc: this.procId, signal: signalNumber(sig) }, replies.empty, { timeoutMs: REQUEST_TIMEOUT_MS });
  }

  async killTree(): Promise<void> {
    if (this.exitSeen) return;
    await this.connOrThrow().request({ op: 'signal', proc: this.procId, signal: signalNumber('SIGKILL'), tree: true }, replies.empty, { timeoutMs: REQUEST_TIMEOUT_MS });
  }

  resize(cols: number, rows: number): void {
    if (!this.conn?.isOpen || this.exitSeen) return;
    this.conn.request({ op: 'resize', proc: this.procId, cols, rows }, replies.empty, { timeoutMs: REQUEST_TIMEOUT_MS }).catch(() => {});
  }

  release(): void {
    if (!this.conn?.isOpen) return;
    this.conn.request({ op: 'release', proc: this.procId }, replies.empty, { timeoutMs: REQUEST_TIMEOUT_MS }).catch(() => {});
  }
}
