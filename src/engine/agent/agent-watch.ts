// A directory watch run by the agent with inotify. Events arrive as they happen (no polling), are
// acknowledged as they are handed on (the agent sends at most EVENT_WINDOW ahead), and sync() is a
// round trip after which every change made before it has been reported.
import { CordonError, errors } from '../../errors/registry.js';
import type { DirWatch, WatchEvent } from '../dir-watcher.js';
import type { AgentConnection } from './agent-connection.js';
import { AgentOpError, type InboundChannel } from './connection-types.js';
import type { AgentUser } from './agent-files.js';
import { replies } from './messages.js';

const EVENT_WINDOW = 1024;
const TIMEOUT_MS = 30_000;
/** Longer than the agent's own 10 s limit on a sync, so a busy sandbox is not taken for a hung agent. */
const SYNC_TIMEOUT_MS = 15_000;

export class AgentWatch implements DirWatch {
  readonly exited: Promise<unknown>;
  private ended!: () => void;
  private stopped = false;

  private ch!: InboundChannel;

  private constructor(private readonly conn: AgentConnection) {
    this.exited = new Promise<void>((r) => (this.ended = r));
  }

  static async start(conn: AgentConnection, dir: string, opts: { recursive: boolean; user: AgentUser }, onEvent: (e: WatchEvent) => void): Promise<AgentWatch> {
    let w: AgentWatch | undefined;
    let received = 0;
    const ch = conn.openEvents(EVENT_WINDOW, {
      events: (evs) => {
        for (const e of evs) {
          if (!w || w.stopped) break;
          if (e.type === 'gone') w.finish();
          else if (e.type !== 'overflow' && e.name) onEvent({ name: e.name, type: e.type, isDir: e.isDir });
        }
        received += evs.length;
        ch.ack(received);
      },
      error: () => w?.finish(),
      lost: () => w?.finish(),
    });
    w = new AgentWatch(conn);
    w.ch = ch;
    try {
      await conn.request({ op: 'watch', path: dir, recursive: opts.recursive, user: opts.user, ch: ch.id, window: EVENT_WINDOW }, replies.empty, { timeoutMs: TIMEOUT_MS });
    } catch (e) {
      ch.close();
      if (e instanceof AgentOpError) {
        if (e.errno === 'ENOENT') throw errors.fileNotFound(dir);
        if (e.errno === 'ENOTDIR') throw new CordonError('invalid_argument', `path ${dir} is not a directory`);
        if (e.errno === 'EACCES' || e.errno === 'EPERM') throw new CordonError('permission_denied', `${dir}: permission denied for this user`);
        throw new CordonError('internal', `watching ${dir} failed: ${e.message}`);
      }
      throw e;
    }
    return w;
  }

  private finish(): void {
    this.stopped = true;
    this.ended();
  }

  /** Resolves once every change made before the call has been reported. */
  async sync(): Promise<void> {
    if (this.stopped || !this.conn.isOpen) return;
    await this.conn.request({ op: 'wsync', ch: this.ch.id }, replies.empty, { timeoutMs: SYNC_TIMEOUT_MS }).catch(() => {});
  }

  stop(): void {
    if (this.stopped) return;
    this.finish();
    this.ch.close();
    if (this.conn.isOpen) this.conn.request({ op: 'unwatch', ch: this.ch.id }, replies.empty, { timeoutMs: TIMEOUT_MS }).catch(() => {});
  }
}
