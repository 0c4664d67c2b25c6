// The processes one sandbox's agent runs, from the daemon's side: starting them, and on every new
// connection matching what the agent reports against what the daemon knows. A process the daemon
// knows and the agent still runs is re-attached; one the agent no longer knows (it died and a new
// one started) is given up; one the daemon does not know (it restarted, or the sandbox was restored
// elsewhere) is adopted, its output replayed from what the agent kept.
import { z } from 'zod';
import type { ExecSpec } from '../../runtime/types.js';
import type { ProcessMeta } from '../process-handle.js';
import type { AgentConnection } from './agent-connection.js';
import { unavailable } from './connection-types.js';
import type { AgentLink } from './agent-link.js';
import { AgentProcess } from './agent-process.js';
import { PROC_ID, type Hello, type HelloProcess } from './messages.js';

/** How long processes wait for an agent that went away before their streams are given up. */
const REATTACH_GRACE_MS = 10_000;

/** The metadata a process was started with, as the agent gives it back (checked: it came from inside). */
const metaSchema = z.object({
  id: z.string().regex(PROC_ID),
  tag: z.string().min(1).max(256).optional(),
  cmd: z.array(z.string().max(131072)).min(1).max(4096),
  cwd: z.string().max(4096),
  user: z.string().max(256),
  env: z.record(z.string().max(256), z.string().max(131072)),
  pty: z.boolean(),
  startedAt: z.number().int().min(0),
});

export interface Adoption {
  meta: ProcessMeta;
  pid: number;
  stdinOpen: boolean;
  exited: boolean;
  handle: AgentProcess;
}

export class AgentProcesses {
  private readonly procs = new Map<string, AgentProcess>();
  private grace?: NodeJS.Timeout;
  /** A process the daemon does not know was found running under the agent. */
  onAdopt?: (a: Adoption) => void;
  /** Something worth an event (an unusable process entry from the agent). */
  onNotice?: (message: string) => void;

  constructor(private readonly link: AgentLink) {
    link.onHello = (h, conn) => this.hello(h, conn);
    link.onExit = (m) => this.procs.get(m.proc)?.onExit(m.code, m.signal);
    link.onDisconnect = (reason) => this.disconnected(reason);
  }

  /** Start a process through the agent; rejects (unavailable) when it is not connected. */
  async launch(spec: ExecSpec, meta: ProcessMeta): Promise<AgentProcess> {
    const conn = this.link.current();
    if (!conn) throw unavailable("the sandbox's agent is not connected");
    const p = new AgentProcess(meta.id, !!spec.tty);
    this.procs.set(meta.id, p);
    try {
      await p.start(conn, {
        args: spec.args,
        env: spec.env,
        cwd: spec.cwd,
        user: { uid: spec.uid, gid: spec.gid, groups: spec.additionalGids ?? [] },
        ...(spec.tty ? { tty: spec.tty } : {}),
        ...(spec.nproc !== undefined ? { nproc: spec.nproc } : {}),
        meta,
      });
    } catch (e) {
      this.procs.delete(meta.id);
      throw e;
    }
    void Promise.race([p.exited, p.lost]).then(() => setTimeout(() => this.procs.get(meta.id) === p && this.procs.delete(meta.id), 60_000).unref());
    return p;
  }

  private hello(h: Hello, conn: AgentConnection): void {
    clearTimeout(this.grace);
    const reported = new Map(h.processes.map((hp) => [hp.proc, hp]));
    for (const [id, p] of this.procs) {
      const hp = reported.get(id);
      if (!hp) {
        p.markLost(`the sandbox's agent restarted and no longer runs process ${id}; its output and exit status are lost (the process may have been killed with the old agent)`);
        this.procs.delete(id);
      } else if (hp.tty !== p.tty) {
        p.markLost(`the sandbox's agent reports process ${id} differently than it was started`);
        this.procs.delete(id);
      } else void p.attach(conn, hp);
    }
    for (const hp of h.processes) if (!this.procs.has(hp.proc)) this.adopt(conn, hp);
  }

  private adopt(conn: AgentConnection, hp: HelloProcess): void {
    const meta = metaSchema.safeParse(hp.meta);
    if (!meta.success || meta.data.id !== hp.proc || meta.data.pty !== hp.tty || (hp.tty ? hp.out.length !== 1 : hp.out.length !== 2)) {
      this.onNotice?.(`the agent reported process ${hp.proc} with unusable details; it is not listed`);
      return;
    }
    const p = new AgentProcess(hp.proc, hp.tty);
    this.procs.set(hp.proc, p);
    this.onAdopt?.({ meta: meta.data, pid: hp.pid, stdinOpen: hp.stdinOpen, exited: !!hp.exit, handle: p });
    void p.attach(conn, hp);
  }

  private disconnected(reason: string): void {
    for (const p of this.procs.values()) p.detach();
    clearTimeout(this.grace);
    // A quiesced agent (checkpoint) is expected back; anything else gets a grace period.
    this.grace = setTimeout(() => {
      if (this.link.connected || this.link.quiesced) return;
      for (const [id, p] of this.procs) {
        if (p.settled) continue;
        p.markLost(`the sandbox's agent went away (${reason}) and did not come back within ${REATTACH_GRACE_MS / 1000}s; the command's output and exit status are lost`);
        this.procs.delete(id);
      }
    }, REATTACH_GRACE_MS);
    this.grace.unref();
  }

  /** The sandbox is going away. */
  close(): void {
    clearTimeout(this.grace);
    this.procs.clear();
  }
}
