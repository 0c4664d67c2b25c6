import type { DaemonConfig } from '../config.js';
import { CordonError, errors } from '../errors/registry.js';
import { DEFAULT_PATH } from '../runtime/oci-spec.js';
import type { ExecSpec, Runtime } from '../runtime/types.js';
import { AgentOpError } from './agent/connection-types.js';
import { AgentLink } from './agent/agent-link.js';
import { AgentProcesses } from './agent/agent-processes.js';
import { AgentWatch } from './agent/agent-watch.js';
import type { AgentControl } from './agent/control.js';
import { DirWatcher, type DirWatch, type WatchEvent } from './dir-watcher.js';
import { composeEnv } from './exec-env.js';
import { FileService } from './files.js';
import type { ProcessHandle, ProcessMeta } from './process-handle.js';
import { ProcessManager, type ManagedProcess, type ProcessEvent } from './process-manager.js';
import { SandboxFiles } from './sandbox-files.js';
import { NO_TELEMETRY, timed, type Telemetry } from '../telemetry/telemetry.js';
import type { ImageConfig, SandboxRecord } from './types.js';
import { resolveUser, runcAccountFilesProblem, type ResolvedUser } from './users.js';

export interface CommandRequest {
  cmd: string[];
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  tag?: string;
  stdin?: boolean;
  stdinData?: Buffer;
  timeoutMs?: number;
  tty?: { cols: number; rows: number };
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  durationMs: number;
  timedOut: boolean;
  oomKilled: boolean;
  truncated: boolean;
}

export interface SandboxStats {
  cpuPercent: number;
  memoryUsageBytes: number;
  memoryLimitBytes: number;
  memoryPercent: number;
  pids: number;
  networkRxBytes: number;
  networkTxBytes: number;
  diskReadBytes: number;
  diskWriteBytes: number;
  oomKills: number;
  timestamp: string;
}

/** How a sandbox reaches its agent (absent: the sandbox runs without one). */
export interface AgentSetup {
  /** Host directory of the agent's socket, bind-mounted into the sandbox. */
  socketDir: string;
  /** Whether the sandbox runs now (a frozen agent is not pinged). */
  isRunning: () => boolean;
}

/** In-memory side of a running sandbox: its processes, files and resource sampling. */
export class LiveSandbox {
  readonly processes: ProcessManager;
  readonly files: SandboxFiles;
  /** The agent seam for checkpoints (absent when the sandbox has no agent). */
  readonly agent?: AgentControl;
  private readonly agentLink?: AgentLink;
  private readonly agentProcs?: AgentProcesses;
  private lastCpu?: { at: number; ns: number };
  private oomBaseline = 0;
  /** Runtime execs in flight (processes and file helpers): each is a process on the host as well. */
  private execs = 0;
  /** Where exec and process-start latencies are counted (set by the engine when it attaches the sandbox). */
  telemetry: Telemetry = NO_TELEMETRY;

  constructor(
    private readonly rec: SandboxRecord,
    private readonly runtime: Runtime,
    private readonly image: ImageConfig,
    private readonly rootfs: string,
    /** Bytes received and sent over the sandbox's network link (the network driver owns it). */
    private readonly netCounters: () => Promise<{ rx: number; tx: number }>,
    /** Whether the container still runs (a failing process of a dead sandbox is its death, not an exit). */
    private readonly containerAlive: () => boolean,
    private readonly cfg: DaemonConfig,
    private readonly onEvent: (type: string, message: string) => void = () => {},
    agent?: AgentSetup,
  ) {
    this.processes = new ProcessManager(
      rec.id,
      runtime,
      cfg.processOutputBufferBytes,
      { highWaterBytes: cfg.streamHighWaterBytes, writeDeadlineMs: cfg.streamWriteDeadlineMs },
      (spec, meta) => this.launch(spec, meta),
    );
    if (agent) {
      const link = new AgentLink({ sandboxId: rec.id, socketDir: agent.socketDir, event: (m) => onEvent('agent', m), isRunning: agent.isRunning });
      const procs = new AgentProcesses(link);
      procs.onAdopt = (a) => void this.processes.adopt(a, { oomCheck: () => this.oomHappened(), sandboxAlive: this.containerAlive });
      procs.onNotice = (m) => onEvent('agent', m);
      this.agentLink = link;
      this.agentProcs = procs;
      this.agent = link;
      link.start().catch((e: Error) => onEvent('agent', `the agent's socket could not be set up (${e.message}); the runtime's exec path serves this sandbox`));
    }
    const execFiles = new FileService(this.helperExec, (u) => this.resolveUser(u));
    this.files = new SandboxFiles(execFiles, () => this.agentLink?.current(), async (u) => {
      const r = await this.resolveUser(u);
      return { uid: r.uid, gid: r.gid, groups: r.additionalGids, ...(r.accountsKey ? { accounts: r.accountsKey } : {}) };
    });
    void runtime.stats(rec.id).then((s) => (this.oomBaseline = s.oomKills)).catch(() => {});
  }

  get id(): string {
    return this.rec.id;
  }

  /** A claim from a warm pool gives the sandbox the request's env and timeout: later commands see them. */
  setSpec(spec: SandboxRecord['spec']): void {
    this.rec.spec = spec;
  }

  defaultUser(): string {
    return this.chosenUser() ?? 'root';
  }

  /** The user the sandbox's create or its image/template (USER) chose; undefined when neither did. */
  chosenUser(): string | undefined {
    return this.rec.spec.user || this.image.user || undefined;
  }

  /** The sandbox's working directory as its create or its image (WORKDIR) set it; undefined when neither did. */
  workdir(): string | undefined {
    return this.rec.spec.workdir || this.image.workdir || undefined;
  }

  /** Whether the template left the workdir to the user's home (E2B's default) and the create did not set one. */
  workdirIsHome(): boolean {
    return !this.rec.spec.workdir && !!this.image.homeWorkdir;
  }

  resolveUser(user?: string): Promise<ResolvedUser> {
    return resolveUser(this.rootfs, user || this.defaultUser());
  }

  private async execSpec(req: CommandRequest) {
    if (!req.cmd.length) throw new CordonError('invalid_argument', 'cmd: give at least the program to run');
    const user = await this.resolveUser(req.user);
    const accountProblem = this.runtime.capabilities.readsAccountFiles ? await runcAccountFilesProblem(this.rootfs) : undefined;
    if (accountProblem) throw new CordonError('invalid_state', `${accountProblem}; a process already running inside can replace it with a regular file, otherwise remove the sandbox (crun and runsc are not affected)`);
    const cwd = req.cwd ?? this.workdir() ?? '/';
    const spec = {
      args: req.cmd,
      env: composeEnv(this.image, this.rec.spec, user, req.env),
      cwd: cwd.startsWith('/') ? cwd : `${user.home}/${cwd}`,
      uid: user.uid,
      gid: user.gid,
      additionalGids: user.additionalGids,
      tty: req.tty,
      nproc: this.runtime.capabilities.processLimit === 'rlimit' ? this.rec.spec.pids : undefined,
      noNewPrivileges: !!this.rec.spec.noNewPrivileges,
    };
    return { spec, user };
  }

  /**
   * Count one more runtime exec, or refuse (429) past --max-processes: a client must not be able to
   * make the host run thousands of `runsc exec` / `crun exec` processes for one sandbox.
   */
  private reserveExec(): () => void {
    const max = this.cfg.maxProcesses;
    if (this.execs >= max) {
      throw new CordonError(
        'rate_limited',
        `sandbox ${this.rec.id} already runs ${this.execs} processes and file operations through the API (limit ${max}, cordon serve --max-processes); wait for some to finish or kill some`,
        { sandbox_id: this.rec.id, limit: max, retry_after_s: 1 },
      );
    }
    this.execs++;
    let released = false;
    return () => {
      if (!released) (released = true), this.execs--;
    };
  }

  /** A helper process that is not in the process list (file operations, the E2B directory watcher). */
  readonly helperExec = async (args: string[], user?: string) => {
    const { spec } = await this.execSpec({ cmd: args, user, cwd: '/' });
    const release = this.reserveExec();
    try {
      const h = this.runtime.exec(this.rec.id, spec);
      void h.exited.finally(release);
      return h;
    } catch (e) {
      release();
      throw e;
    }
  };

  /** Start a process through the agent when it is connected, else with the runtime's exec. */
  private async launch(spec: ExecSpec, meta: ProcessMeta): Promise<ProcessHandle> {
    if (this.agentProcs && this.agentLink?.connected) {
      const env = spec.env.some((e) => e.startsWith('PATH=')) ? spec.env : [DEFAULT_PATH, ...spec.env];
      try {
        return await this.agentProcs.launch({ ...spec, env }, meta);
      } catch (e) {
        // No process slot left inside (a pids limit): the runtime can still add one from outside.
        if (!(e instanceof AgentOpError && e.errno === 'EAGAIN')) throw e;
      }
    }
    return this.runtime.exec(this.rec.id, spec);
  }

  /** Wait up to `timeoutMs` for the agent to connect; false when it did not (or there is none). */
  waitForAgent(timeoutMs: number): Promise<boolean> {
    return this.agentLink ? this.agentLink.waitConnected(timeoutMs) : Promise.resolve(false);
  }

  /** Watch a directory: inotify through the agent, else polling with a helper shell. */
  async watch(dir: string, opts: { recursive: boolean; user?: string }, onEvent: (e: WatchEvent) => void): Promise<DirWatch> {
    const conn = this.agentLink?.current();
    if (conn) {
      const u = await this.resolveUser(opts.user);
      return AgentWatch.start(conn, dir, { recursive: opts.recursive, user: { uid: u.uid, gid: u.gid, groups: u.additionalGids } }, onEvent);
    }
    return DirWatcher.start(this.helperExec, dir, opts, onEvent);
  }

  start(req: CommandRequest): Promise<ManagedProcess> {
    return timed(this.telemetry, 'process_start', this.runtime.name, () => this.startProcess(req));
  }

  private async startProcess(req: CommandRequest): Promise<ManagedProcess> {
    const { spec, user } = await this.execSpec(req);
    const release = this.reserveExec();
    try {
      const proc = await this.processes.start({
        spec,
        user: user.name,
        env: req.env ?? {},
        tag: req.tag,
        stdin: req.stdin,
        stdinData: req.stdinData,
        timeoutMs: req.timeoutMs,
        oomCheck: () => this.oomHappened(),
        sandboxAlive: this.containerAlive,
      });
      void proc.handle.exited.finally(release);
      return proc;
    } catch (e) {
      release();
      throw e;
    }
  }

  startMain(args: string[]): Promise<ManagedProcess> {
    return this.start({ cmd: args, tag: 'main' });
  }

  /** Run to completion and collect output (capped; `truncated` says when the cap was hit). */
  /**
   * Run `true` once, then forget it: the first process start in a restored sandbox pays for pages its
   * restore left to load on first touch (the dynamic loader, libc, the agent's own), so a warm pool
   * member does this before it counts as ready instead of its claimer's first command. An image
   * without `true` fails it, harmlessly.
   */
  async warmUp(timeoutMs: number): Promise<{ ms: number; exitCode?: number }> {
    const started = Date.now();
    const tag = `cordon-warm-up-${this.rec.id}`;
    const r = await this.exec({ cmd: ['true'], tag, timeoutMs }).catch(() => undefined);
    const proc = this.processes.byTag(tag);
    if (proc) this.processes.forget(proc.info.id);
    return { ms: Date.now() - started, exitCode: r?.exitCode };
  }

  exec(req: CommandRequest): Promise<ExecResult> {
    return timed(this.telemetry, 'exec', this.runtime.name, () => this.execToEnd(req));
  }

  private async execToEnd(req: CommandRequest): Promise<ExecResult> {
    const started = Date.now();
    const proc = await this.start(req);
    const limit = this.cfg.execOutputLimitBytes;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    let truncated = false;
    // A collector, not a client transport: it never holds a backlog, so it never pauses the process.
    const exit = await new Promise<Extract<ProcessEvent, { type: 'exit' }>>((resolve, reject) => {
      proc.subscribe({
        push: (ev) => {
          if (ev.type === 'stdout' || ev.type === 'pty') {
            if (outLen + ev.data.length <= limit) (out.push(ev.data), (outLen += ev.data.length));
            else truncated = true;
          } else if (ev.type === 'stderr') {
            if (errLen + ev.data.length <= limit) (err.push(ev.data), (errLen += ev.data.length));
            else truncated = true;
          } else if (ev.type === 'exit') resolve(ev);
        },
        backlog: () => 0,
        onDrain: (cb) => cb(),
        drop: (why) => reject(why.kind === 'agent_lost' ? new CordonError('unavailable', why.message) : errors.sandboxGone(this.rec.id, why.message)),
      });
    });
    return {
      exitCode: exit.exitCode,
      stdout: Buffer.concat(out).toString('utf8'),
      stderr: Buffer.concat(err).toString('utf8'),
      durationMs: Date.now() - started,
      timedOut: !!exit.timedOut,
      oomKilled: !!exit.oomKilled,
      truncated,
    };
  }

  private async oomHappened(): Promise<boolean> {
    const s = await this.runtime.stats(this.rec.id);
    const happened = s.oomKills > this.oomBaseline;
    this.oomBaseline = s.oomKills;
    if (happened) this.onEvent('oom', `a process was killed for exceeding the ${this.rec.spec.memoryBytes}-byte memory limit`);
    return happened;
  }

  async stats(): Promise<SandboxStats> {
    const sample = async () => ({ at: Date.now(), s: await this.runtime.stats(this.rec.id) });
    let prev = this.lastCpu;
    let cur = await sample();
    if (!prev || cur.at - prev.at > 30_000 || cur.at - prev.at < 50) {
      prev = { at: cur.at, ns: cur.s.cpuUsageNs };
      await new Promise((r) => setTimeout(r, 200));
      cur = await sample();
    }
    this.lastCpu = { at: cur.at, ns: cur.s.cpuUsageNs };
    const cpuPercent = Math.max(0, ((cur.s.cpuUsageNs - prev.ns) / 1e6 / Math.max(1, cur.at - prev.at)) * 100);
    const net = await this.netCounters();
    const limit = cur.s.memoryLimitBytes;
    return {
      cpuPercent: Math.round(cpuPercent * 100) / 100,
      memoryUsageBytes: cur.s.memoryUsageBytes,
      memoryLimitBytes: limit,
      memoryPercent: limit ? Math.round((cur.s.memoryUsageBytes / limit) * 10000) / 100 : 0,
      pids: cur.s.pids,
      networkRxBytes: net.rx,
      networkTxBytes: net.tx,
      diskReadBytes: cur.s.diskReadBytes,
      diskWriteBytes: cur.s.diskWriteBytes,
      oomKills: cur.s.oomKills,
      timestamp: new Date(cur.at).toISOString(),
    };
  }

  /** The sandbox is going away: open streams are cut (no exit event), then the processes are forgotten. */
  close(reason = `sandbox ${this.rec.id} went away (removed, stopped or dead) while the command ran`): void {
    this.processes.abortAll(reason);
    this.processes.clear();
    this.agentProcs?.close();
    void this.agentLink?.close();
  }
}
