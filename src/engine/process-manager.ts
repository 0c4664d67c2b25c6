import { CordonError, errors } from '../errors/registry.js';
import { HELPER_DIR } from '../runtime/oci-spec.js';
import type { ExecSpec, Runtime } from '../runtime/types.js';
import { UnobservedThrottle } from './output-throttle.js';
import type { FlowLimits, StreamDrop } from './output-fanout.js';
import { ManagedProcess, type ProcessEvent, type ProcessInfo } from './managed-process.js';

export { ManagedProcess, type ProcessEvent, type ProcessInfo, type ProcessSink } from './managed-process.js';
import type { Launcher, ProcessHandle, ProcessMeta } from './process-handle.js';
import { diagnoseStartFailure } from './start-failure.js';

const BB = `${HELPER_DIR}/busybox`;

/**
 * Kill a process and every descendant, found by walking ppids in the sandbox's own /proc: killing
 * only the top process would leave e.g. the `sleep` of a timed-out `sh -c '...; sleep 30'` running.
 */
const KILL_TREE = [
  'all=$1; t=$1',
  'while [ -n "$t" ]; do n=""; for f in /proc/[0-9]*/stat; do read -r l < "$f" 2>/dev/null || continue; p=${l%% *}; r=${l##*) }; set -- $r; for x in $t; do [ "$2" = "$x" ] && n="$n $p"; done; done; all="$all $n"; t=$n; done',
  `${BB} kill -9 $all 2>/dev/null; true`,
].join('\n');

/** What a process manager needs besides a launcher: checks made when a process fails. */
export interface ExitChecks {
  /** Called after exit to tell whether the kernel OOM-killed something meanwhile. */
  oomCheck?: () => Promise<boolean>;
  /** Called after a failed exit: false when the whole sandbox is gone (the exit then is not the command's). */
  sandboxAlive?: () => boolean;
}

/** A process found running (by the agent) that this manager did not start: after a daemon restart or a restore. */
export interface AdoptedProcess {
  meta: ProcessMeta;
  pid: number;
  stdinOpen: boolean;
  exited: boolean;
  handle: ProcessHandle;
}

export interface StartOptions {
  spec: ExecSpec;
  user: string;
  env: Record<string, string>;
  tag?: string;
  /** Keep stdin open for sendStdin; otherwise the process sees EOF at once (after `stdinData`). */
  stdin?: boolean;
  stdinData?: Buffer;
  timeoutMs?: number;
  /** Called after exit to tell whether the kernel OOM-killed something meanwhile. */
  oomCheck?: () => Promise<boolean>;
  /** Called after a failed exit: false when the whole sandbox is gone (the exit then is not the command's). */
  sandboxAlive?: () => boolean;
}

const KEEP_FINISHED = 200;
const SYNTHETIC_PID_BASE = 1 << 22;
let syntheticPid = SYNTHETIC_PID_BASE;

/**
 * The processes of one sandbox: start, find by id, pid or tag, stdin, signals, terminal size.
 * Processes are keyed by cordon's own id; a pid is only an attribute, since the sandbox's kernel
 * hands a pid out again once its process is gone.
 */
export class ProcessManager {
  private readonly procs = new Map<string, ManagedProcess>();
  private readonly finished: string[] = [];
  /** Tag → id of the running process that holds it ('' while its start is under way). */
  private readonly tags = new Map<string, string>();
  private seq = 0;
  private gone?: StreamDrop;

  constructor(
    private readonly sandboxId: string,
    private readonly runtime: Runtime,
    private readonly bufferLimit: number,
    private readonly flow: FlowLimits,
    /** How processes are started; default: the runtime's exec. */
    private readonly launch: Launcher = async (spec) => runtime.exec(sandboxId, spec),
  ) {}

  async start(opts: StartOptions): Promise<ManagedProcess> {
    if (this.gone) throw errors.sandboxGone(this.sandboxId, this.gone.message);
    const { tag } = opts;
    // Claimed before the first await, so of two concurrent starts with one tag exactly one wins.
    if (tag !== undefined) {
      if (this.tags.has(tag)) throw new CordonError('already_exists', `a running process already has tag ${tag}; pick another tag or kill it first`, { tag });
      this.tags.set(tag, '');
    }
    const id = `p-${++this.seq}`;
    const startedAt = Date.now();
    let handle: ProcessHandle;
    try {
      handle = await this.launch(opts.spec, { id, tag, cmd: opts.spec.args, cwd: opts.spec.cwd, user: opts.user, env: opts.env, pty: !!opts.spec.tty, startedAt });
    } catch (e) {
      if (tag !== undefined) this.tags.delete(tag);
      throw e;
    }
    // The runtime reports the pid as the process starts, or fails once it has exited without one.
    const pid = (await handle.pid.catch(() => undefined)) ?? ++syntheticPid;
    const proc = new ManagedProcess(
      {
        id,
        pid,
        tag,
        cmd: opts.spec.args,
        cwd: opts.spec.cwd,
        user: opts.user,
        env: opts.env,
        pty: !!opts.spec.tty,
        running: true,
        stdinOpen: !!opts.stdin,
        startedAt,
      },
      handle,
      this.bufferLimit,
      this.flow,
    );
    this.procs.set(id, proc);
    if (tag !== undefined) this.tags.set(tag, id);
    this.pump(proc, opts);
    if (opts.stdinData?.length) handle.stdin.write(opts.stdinData);
    if (!opts.stdin) handle.stdin.end();
    // The sandbox went away while the process was starting: it dies with it, its streams with it.
    if (this.gone) this.end(proc, this.gone);
    return proc;
  }

  /**
   * List a process the agent runs that this manager did not start (the daemon restarted, or the
   * sandbox was restored): its output is replayed from what the agent kept, then followed.
   */
  adopt(a: AdoptedProcess, checks: ExitChecks): ManagedProcess | undefined {
    if (this.gone || this.procs.has(a.meta.id)) return undefined;
    const n = Number(a.meta.id.slice(2));
    if (n > this.seq) this.seq = n;
    const running = !a.exited;
    const proc = new ManagedProcess(
      { id: a.meta.id, pid: a.pid, tag: a.meta.tag, cmd: a.meta.cmd, cwd: a.meta.cwd, user: a.meta.user, env: a.meta.env, pty: a.meta.pty, running, stdinOpen: running && a.stdinOpen, startedAt: a.meta.startedAt },
      a.handle,
      this.bufferLimit,
      this.flow,
    );
    this.procs.set(a.meta.id, proc);
    if (running && a.meta.tag !== undefined && !this.tags.has(a.meta.tag)) this.tags.set(a.meta.tag, a.meta.id);
    this.pump(proc, { spec: { args: a.meta.cmd, env: [], cwd: a.meta.cwd, uid: 0, gid: 0 }, user: a.meta.user, env: a.meta.env, ...checks });
    return proc;
  }

  private pump(proc: ManagedProcess, opts: StartOptions): void {
    const h = proc.handle;
    const streams: Promise<void>[] = [];
    const pipes: NodeJS.ReadableStream[] = [];
    // Two reasons hold the pipes: a congested subscriber, and the rate limit on unobserved output.
    let congested = false;
    let throttled = false;
    const apply = () => pipes.forEach((s) => (congested || throttled ? s.pause() : s.resume()));
    const throttle = new UnobservedThrottle((held) => {
      throttled = held;
      apply();
    });
    const follow = (s: NodeJS.ReadableStream | undefined, type: 'stdout' | 'stderr' | 'pty') => {
      if (!s) return;
      pipes.push(s);
      streams.push(
        new Promise((resolve) => {
          s.on('data', (d: Buffer) => {
            proc.record({ type, data: d });
            if (!proc.observed) throttle.take(d.length);
          });
          s.on('end', resolve);
          s.on('close', resolve);
          s.on('error', () => resolve());
        }),
      );
    };
    follow(h.stdout, proc.info.pty ? 'pty' : 'stdout');
    follow(h.stderr, 'stderr');
    // Not reading the pipes is what pauses the process: they fill, and its writes block.
    proc.setSource({
      pause: () => ((congested = true), apply()),
      resume: () => ((congested = false), apply()),
    });
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs && opts.timeoutMs > 0) {
      timer = setTimeout(() => {
        proc.timedOut = true;
        void this.killTreeOf(proc).catch(() => h.signal('SIGKILL').catch(() => {}));
      }, opts.timeoutMs);
    }
    void (async () => {
      const lost = h.lost?.then((drop) => ({ drop }));
      const outcome = await (lost ? Promise.race([h.exited, lost]) : h.exited);
      if ('drop' in outcome) {
        // The agent that ran it is gone: no exit status will come; the streams end saying so.
        if (timer) clearTimeout(timer);
        this.end(proc, outcome.drop);
        return this.retire(proc);
      }
      const status = outcome;
      // Output can still be in flight when the exit is seen; give the pipes a moment to drain (a
      // background grandchild may hold them open for ever). While a congested subscriber keeps them
      // paused, wait on: its drain or its write deadline resumes them.
      const drained = Promise.all(streams).then(() => true);
      while (!(await Promise.race([drained, new Promise<boolean>((r) => setTimeout(() => r(false), 2000))])) && proc.outputPaused);
      if (timer) clearTimeout(timer);
      if (proc.aborted) return this.retire(proc);
      // Any failure may be the kernel's OOM killer at work: 137 for a plain process, while under gVisor
      // the victim is a task of the sentry and the exec ends with whatever the sandbox reports (1, 128).
      const oomKilled = status.exitCode !== 0 && opts.oomCheck ? await opts.oomCheck().catch(() => false) : false;
      // Otherwise a failure of a sandbox that is gone is the sandbox's death, not the command's exit.
      if (!oomKilled && status.exitCode !== 0 && opts.sandboxAlive && !opts.sandboxAlive()) {
        this.end(proc, { kind: 'sandbox_gone', message: `sandbox ${this.sandboxId} stopped running while the command ran` });
        return this.retire(proc);
      }
      // A timeout reports 124 like timeout(1), on every surface (sync, SSE, WebSocket, CLI).
      let exitCode = oomKilled ? 137 : proc.timedOut ? 124 : status.exitCode;
      // No pid was ever reported: the runtime could not start the command at all.
      if (!oomKilled && !proc.timedOut && exitCode !== 0 && proc.info.pid > SYNTHETIC_PID_BASE) {
        const why = await (h.startFailure ?? diagnoseStartFailure(this.runtime, this.sandboxId, opts.spec)).catch(() => undefined);
        if (why) {
          exitCode = why.exitCode;
          proc.record({ type: proc.info.pty ? 'pty' : 'stderr', data: Buffer.from(why.message) });
        }
      }
      if (proc.aborted) return this.retire(proc);
      proc.info.running = false;
      proc.info.stdinOpen = false;
      proc.info.exitedAt = Date.now();
      proc.info.exitCode = exitCode;
      this.releaseTag(proc);
      proc.record({
        type: 'exit',
        exitCode,
        signal: status.signal,
        ...(proc.timedOut ? { timedOut: true } : {}),
        ...(oomKilled ? { oomKilled: true } : {}),
      });
      h.release?.();
      this.retire(proc);
    })();
  }

  /** Cut a process's streams without an exit event and free its tag. */
  private end(proc: ManagedProcess, why: StreamDrop): void {
    proc.abort(why);
    this.releaseTag(proc);
  }

  private releaseTag(proc: ManagedProcess): void {
    const tag = proc.info.tag;
    if (tag !== undefined && this.tags.get(tag) === proc.info.id) this.tags.delete(tag);
  }

  private retire(proc: ManagedProcess): void {
    this.finished.push(proc.info.id);
    while (this.finished.length > KEEP_FINISHED) this.procs.delete(this.finished.shift()!);
  }

  /**
   * The last time any process showed life to a client: its latest output, or now while a client
   * follows a running one (a caller waiting on a quiet command is activity too).
   */
  lastActivityAt(): number {
    let last = 0;
    for (const p of this.procs.values()) {
      if (p.info.running && p.observed) return Date.now();
      last = Math.max(last, p.lastOutputAt);
    }
    return last;
  }

  list(): ProcessInfo[] {
    return [...this.procs.values()].map((p) => p.info);
  }

  /** The running process with this tag, else the most recent one that had it. */
  byTag(tag: string): ManagedProcess | undefined {
    const owner = this.tags.get(tag);
    if (owner) return this.procs.get(owner);
    let found: ManagedProcess | undefined;
    for (const p of this.procs.values()) if (p.info.tag === tag) found = p;
    return found;
  }

  /** The running process with this pid, else the most recent one that had it. */
  byPid(pid: number): ManagedProcess | undefined {
    let found: ManagedProcess | undefined;
    for (const p of this.procs.values()) {
      if (p.info.pid !== pid) continue;
      if (p.info.running) return p;
      found = p;
    }
    return found;
  }

  /** A process by id ("p-3"), pid ("123") or tag ("tag:name" or any other name). */
  get(ref: string | number): ManagedProcess {
    const text = String(ref);
    const p = /^p-\d+$/.test(text) ? this.procs.get(text) : /^\d+$/.test(text) ? this.byPid(Number(text)) : this.byTag(text.replace(/^tag:/, ''));
    if (!p) throw errors.processNotFound(text);
    return p;
  }

  async sendStdin(ref: string | number, data: Buffer): Promise<void> {
    const p = this.get(ref);
    if (!p.info.stdinOpen) throw new CordonError('invalid_state', `stdin of process ${p.info.pid} is closed; start it with stdin enabled`);
    // Input the process has not read yet is held in memory: bounded, whatever the number of writers.
    const queued = p.handle.stdin.writableLength;
    if (queued > 0 && queued + data.length > this.flow.highWaterBytes) {
      throw new CordonError('rate_limited', `stdin of process ${p.info.pid} already holds ${queued} bytes the process has not read; wait until it reads them`, { retry_after_s: 1 });
    }
    await new Promise<void>((resolve, reject) => p.handle.stdin.write(data, (e) => (e ? reject(e) : resolve())));
  }

  closeStdin(ref: string | number): void {
    const p = this.get(ref);
    p.info.stdinOpen = false;
    p.handle.stdin.end();
  }

  async signal(ref: string | number, sig: NodeJS.Signals): Promise<void> {
    const p = this.get(ref);
    if (!p.info.running) return;
    await p.handle.signal(sig);
  }

  async resize(ref: string | number, cols: number, rows: number): Promise<void> {
    const p = this.get(ref);
    if (!p.info.pty) throw new CordonError('invalid_argument', `process ${p.info.pid} has no terminal; only PTY processes can be resized`);
    p.handle.resize(cols, rows);
    // crun relays the terminal through a pty of its own inside the sandbox and does not pass the new
    // size on, so also set it on the process's terminal from inside (the kernel then sends SIGWINCH).
    if (p.info.running && !p.handle.resizesNatively && this.runtime.capabilities.terminalResize === 'in-sandbox') {
      await this.helper([BB, 'sh', '-c', `${BB} stty -F /proc/$1/fd/0 rows $2 cols $3 2>/dev/null; true`, 'cordon-resize', String(p.info.pid), String(rows), String(cols)]).catch(() => {});
    }
  }

  /** SIGKILL a process and all its descendants. */
  private async killTreeOf(proc: ManagedProcess): Promise<void> {
    if (proc.handle.killTree) return proc.handle.killTree();
    await this.helper([BB, 'sh', '-c', KILL_TREE, 'cordon-kill', String(proc.info.pid)]);
  }

  /** Run a short root helper inside the sandbox and wait for it. */
  private async helper(args: string[]): Promise<void> {
    const h = this.runtime.exec(this.sandboxId, { args, env: [], cwd: '/', uid: 0, gid: 0 });
    h.stdin.end();
    h.stdout.resume();
    h.stderr?.resume();
    await h.exited;
  }

  /**
   * The sandbox is going away (removed, stopped, dead): every stream still open is cut without an exit
   * event, since whatever status the runtime reports next is the sandbox's death, not the command's.
   */
  abortAll(message: string): void {
    this.gone ??= { kind: 'sandbox_gone', message };
    for (const p of this.procs.values()) if (p.info.running) p.abort(this.gone);
    this.tags.clear();
  }

  /** Forget one finished process (an internal command the sandbox's user did not start). */
  forget(id: string): void {
    const proc = this.procs.get(id);
    if (!proc || proc.info.running) return;
    this.procs.delete(id);
    const at = this.finished.indexOf(id);
    if (at !== -1) this.finished.splice(at, 1);
    this.releaseTag(proc);
  }

  /** Forget every process, e.g. when the sandbox stops; their runtime processes die with it. */
  clear(): void {
    this.procs.clear();
    this.finished.length = 0;
    this.tags.clear();
  }
}
