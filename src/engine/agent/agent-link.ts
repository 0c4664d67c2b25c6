// The daemon's end of one sandbox's agent channel: a Unix socket in a daemon-owned directory that
// is bind-mounted read-only into the sandbox at /.cordon/run. The agent dials it; the link accepts
// one connection at a time, pings it, and treats a dead, hung or lying agent as this sandbox's
// problem only: the connection is dropped, an event recorded, and the exec path serves the
// sandbox until the agent is back (after a protocol violation, not before a cooldown that grows).
import { unlinkSync } from 'node:fs';
import { chmod, mkdir, unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { z } from 'zod';
import { AgentConnection } from './agent-connection.js';
import { ProtocolError } from './frame-codec.js';
import type { AgentControl } from './control.js';
import { replies, type exitMessage, type Hello } from './messages.js';

export const AGENT_SOCKET = 'agent.sock';
const HELLO_TIMEOUT_MS = 10_000;
const PING_EVERY_MS = 10_000;
const PING_TIMEOUT_MS = 5_000;
const QUIESCE_TIMEOUT_MS = 5_000;
const RECONNECT_TIMEOUT_MS = 10_000;
const BAN_FIRST_MS = 2_000;
const BAN_MAX_MS = 120_000;
/** Connections accepted per minute before the agent counts as flooding. */
const MAX_ACCEPTS_PER_MINUTE = 120;
/** A lost connection is recorded as an event at most this often (a crash loop would flood the log). */
const LOSS_EVENT_EVERY_MS = 10_000;

export interface AgentLinkOptions {
  sandboxId: string;
  /** Host directory of the socket (daemon-owned, 0700), bind-mounted at /.cordon/run. */
  socketDir: string;
  /** Record an event on the sandbox (type agent). */
  event(message: string): void;
  /** Whether the sandbox runs now: a frozen agent is not pinged. */
  isRunning(): boolean;
}

export class AgentLink implements AgentControl {
  private server?: Server;
  private conn?: AgentConnection;
  private candidate?: AgentConnection;
  private state: 'listening' | 'quiesced' | 'banned' | 'closed' = 'listening';
  private violations = 0;
  private banTimer?: NodeJS.Timeout;
  private pingTimer?: NodeJS.Timeout;
  private pinging = false;
  private accepts: number[] = [];
  private waiters = new Set<() => void>();
  private channelSeq = 0;
  private lastLossEvent = 0;
  private suppressedLosses = 0;
  private lost = false;
  /** A new connection said hello: re-attach what it runs. */
  onHello?: (h: Hello, conn: AgentConnection) => void;
  onExit?: (m: z.infer<typeof exitMessage>) => void;
  /** The connection ended (processes wait for the agent to come back). */
  onDisconnect?: (reason: string) => void;

  constructor(private readonly opts: AgentLinkOptions) {}

  get socketPath(): string {
    return join(this.opts.socketDir, AGENT_SOCKET);
  }

  get connected(): boolean {
    return !!this.conn?.isOpen;
  }

  /** Quiesced for a checkpoint: the agent is expected back once the restore is done. */
  get quiesced(): boolean {
    return this.state === 'quiesced';
  }

  /** The connection to use now, if the agent is connected. */
  current(): AgentConnection | undefined {
    return this.conn?.isOpen ? this.conn : undefined;
  }

  async start(): Promise<void> {
    await mkdir(this.opts.socketDir, { recursive: true, mode: 0o700 });
    await chmod(this.opts.socketDir, 0o700);
    await this.listen();
    this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
    this.pingTimer.unref();
  }

  private async listen(): Promise<void> {
    if (this.server || this.state === 'closed') return;
    await unlink(this.socketPath).catch(() => {});
    const server = createServer((s) => this.accept(s));
    server.maxConnections = 4;
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', () => {});
    // Only root inside the sandbox (the agent) may connect.
    await chmod(this.socketPath, 0o600).catch(() => {});
    // Closed while the listener was being set up.
    if ((this.state as string) === 'closed') this.stopListening();
  }

  /** Close the listener and remove the socket, so the agent's dials find nothing. */
  private stopListening(): void {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.close();
    // libuv removes the socket file on close; make sure, synchronously, so a new listener is never hit.
    try {
      unlinkSync(this.socketPath);
    } catch {
      /* already gone */
    }
  }

  private accept(socket: Socket): void {
    if (this.state !== 'listening') return void socket.destroy();
    const now = Date.now();
    this.accepts = this.accepts.filter((t) => now - t < 60_000);
    this.accepts.push(now);
    if (this.accepts.length > MAX_ACCEPTS_PER_MINUTE) {
      socket.destroy();
      return this.violation(`it connected more than ${MAX_ACCEPTS_PER_MINUTE} times in a minute`, 'violation');
    }
    this.candidate?.close('replaced by a newer connection');
    const conn: AgentConnection = new AgentConnection(
      socket,
      {
        hello: (h) => {
          clearTimeout(helloTimer);
          // It is used only once it has answered a ping: an agent that says hello and then hangs
          // never holds a command up.
          conn.request({ op: 'ping' }, replies.empty, { timeoutMs: PING_TIMEOUT_MS }).then(
            () => this.promote(conn, h),
            () => {},
          );
        },
        exit: (m) => {
          if (this.conn === conn) this.onExit?.(m);
        },
        closed: (reason, kind) => {
          clearTimeout(helloTimer);
          if (this.candidate === conn) this.candidate = undefined;
          const wasCurrent = this.conn === conn;
          if (wasCurrent) this.conn = undefined;
          if (kind !== 'closed') this.violation(reason, kind);
          else if (wasCurrent && this.state === 'listening') this.loss(reason);
          if (wasCurrent) this.onDisconnect?.(reason);
          for (const w of [...this.waiters]) w();
        },
      },
      () => (this.channelSeq = (this.channelSeq % 0xfffffff0) + 1),
    );
    this.candidate = conn;
    const helloTimer = setTimeout(() => conn.fail(new ProtocolError(`no hello within ${HELLO_TIMEOUT_MS / 1000}s`)), HELLO_TIMEOUT_MS);
    helloTimer.unref();
  }

  private promote(conn: AgentConnection, h: Hello): void {
    if (this.candidate !== conn || !conn.isOpen || this.state !== 'listening') return;
    this.candidate = undefined;
    this.conn?.close('replaced by a newer connection from the agent');
    this.conn = conn;
    if (this.lost) this.opts.event(`the agent is connected again (pid ${h.pid}); commands and files go through it`);
    this.lost = false;
    this.onHello?.(h, conn);
    for (const w of [...this.waiters]) w();
  }

  private loss(reason: string): void {
    this.lost = true;
    const now = Date.now();
    if (now - this.lastLossEvent < LOSS_EVENT_EVERY_MS) {
      this.suppressedLosses++;
      return;
    }
    const more = this.suppressedLosses ? ` (${this.suppressedLosses} more losses since the last event)` : '';
    this.suppressedLosses = 0;
    this.lastLossEvent = now;
    this.opts.event(`the agent's connection ended (${reason})${more}; commands and files use the runtime's exec path until it reconnects`);
  }

  /**
   * The agent broke the protocol or stopped answering: no connection is accepted for a cooldown that
   * doubles each time, and the exec path serves the sandbox meanwhile.
   */
  private violation(reason: string, kind: 'violation' | 'hung'): void {
    if (this.state === 'closed') return;
    this.lost = true;
    this.violations++;
    const cooldown = Math.min(BAN_FIRST_MS * 2 ** (this.violations - 1), BAN_MAX_MS);
    const what = kind === 'hung' ? 'the agent did not answer' : 'the agent broke the protocol';
    this.opts.event(`${what} (${reason}); disconnected, the runtime's exec path serves the sandbox, and the agent is refused for ${Math.round(cooldown / 1000)}s`);
    if (this.state !== 'listening') return;
    this.state = 'banned';
    this.conn?.close('protocol violation');
    this.candidate?.close('protocol violation');
    this.stopListening();
    clearTimeout(this.banTimer);
    this.banTimer = setTimeout(() => {
      if (this.state !== 'banned') return;
      this.state = 'listening';
      void this.listen().catch(() => {});
    }, cooldown);
    this.banTimer.unref();
  }

  private ping(): void {
    const conn = this.current();
    if (!conn || this.pinging || !this.opts.isRunning()) return;
    this.pinging = true;
    // A missed deadline closes the connection (AgentConnection does that for every request).
    conn.request({ op: 'ping' }, replies.empty, { timeoutMs: PING_TIMEOUT_MS }).catch(() => {}).finally(() => (this.pinging = false));
  }

  /** Resolves true once an agent is connected, false after `timeoutMs`. */
  waitConnected(timeoutMs: number): Promise<boolean> {
    if (this.connected) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = () => {
        if (!this.connected && this.state !== 'closed' && Date.now() < deadline) return;
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve(this.connected);
      };
      const deadline = Date.now() + timeoutMs;
      const timer = setTimeout(() => {
        this.waiters.delete(done);
        resolve(this.connected);
      }, timeoutMs);
      timer.unref();
      this.waiters.add(done);
    });
  }

  async quiesce(timeoutMs = QUIESCE_TIMEOUT_MS): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'quiesced';
    clearTimeout(this.banTimer);
    this.stopListening();
    this.candidate?.close('quiescing for a checkpoint');
    const conn = this.conn;
    if (!conn?.isOpen) return;
    const closed = new Promise<void>((resolve) => {
      const check = () => {
        if (conn.isOpen) return;
        this.waiters.delete(check);
        resolve();
      };
      this.waiters.add(check);
    });
    conn.request({ op: 'quiesce' }, replies.empty, { timeoutMs }).catch(() => {});
    const timer = new Promise<void>((r) => setTimeout(r, timeoutMs).unref());
    await Promise.race([closed, timer]);
    // An agent that did not hang up: its end stays open inside the sandbox and the checkpoint will say so.
    if (conn.isOpen) conn.close('it did not hang up for the checkpoint');
  }

  async listenAgain(): Promise<void> {
    if (this.state !== 'quiesced') return;
    this.state = 'listening';
    await this.listen();
  }

  async expectReconnect(timeoutMs = RECONNECT_TIMEOUT_MS): Promise<boolean> {
    if (this.state === 'closed') return false;
    await this.listenAgain();
    return this.waitConnected(timeoutMs);
  }

  /** The sandbox is going away (or stops): drop the connection and the listener (the directory stays with the sandbox). */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearTimeout(this.banTimer);
    clearInterval(this.pingTimer);
    this.stopListening();
    this.candidate?.close('the sandbox is going away');
    this.conn?.close('the sandbox is going away');
    for (const w of [...this.waiters]) w();
  }
}
