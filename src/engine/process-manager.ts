import { EventEmitter } from 'node:events';
import { CordonError, errors } from '../errors/registry.js';
import { HELPER_DIR } from '../runtime/oci-spec.js';
import type { ExecHandle, ExecSpec, Runtime } from '../runtime/types.js';
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

export type ProcessEvent =
  | { type: 'start'; pid: number }
  | { type: 'stdout' | 'stderr' | 'pty'; data: Buffer }
  | { type: 'exit'; exitCode: number; signal?: string; timedOut?: boolean; oomKilled?: boolean; error?: string };

export interface ProcessInfo {
  pid: number;
  tag?: string;
  cmd: string[];
  cwd: string;
  user: string;
  env: Record<string, string>;
  pty: boolean;
  running: boolean;
  stdinOpen: boolean;
  startedAt: number;
  exitedAt?: number;
  exitCode?: number;
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
}

const KEEP_FINISHED = 200;
const SYNTHETIC_PID_BASE = 1 << 22;
let syntheticPid = SYNTHETIC_PID_BASE;

/** One running or recently finished process, with the output a late subscriber can replay. */
export class ManagedProcess extends EventEmitter {
  readonly info: ProcessInfo;
  private chunks: ProcessEvent[] = [];
  private buffered = 0;
  private dropped = false;
  exit?: Extract<ProcessEvent, { type: 'exit' }>;
  timedOut = false;

  constructor(info: ProcessInfo, readonly handle: ExecHandle, private readonly bufferLimit: number) {
    super();
    this.info = info;
    this.setMaxListeners(0);
  }

  record(ev: ProcessEvent): void {
    if (ev.type === 'stdout' || ev.type === 'stderr' || ev.type === 'pty') {
      this.chunks.push(ev);
      this.buffered += ev.data.length;
      while (this.buffered > this.bufferLimit && this.chunks.length > 1) {
        const old = this.chunks.shift() as { data: Buffer };
        this.buffered -= old.data.length;
        this.dropped = true;
      }
    } else if (ev.type === 'exit') {
      this.exit = ev;
    }
    this.emit('event', ev);
  }

  /** Replay what is buffered, then follow live events until exit. Returns an unsubscribe function. */
  subscribe(fn: (ev: ProcessEvent) => void, replay = true): () => void {
    fn({ type: 'start', pid: this.info.pid });
    if (replay) for (const c of this.chunks) fn(c);
    if (this.exit) {
      fn(this.exit);
      return () => {};
    }
    this.on('event', fn);
    return () => this.off('event', fn);
  }

  get outputDropped(): boolean {
    return this.dropped;
  }
}

/** The processes of one sandbox: start, find by pid or tag, stdin, signals, terminal size. */
export class ProcessManager {
  private readonly procs = new Map<number, ManagedProcess>();
  private readonly finished: number[] = [];

  constructor(
    private readonly sandboxId: string,
    private readonly runtime: Runtime,
    private readonly bufferLimit: number,
  ) {}

  async start(opts: StartOptions): Promise<ManagedProcess> {
    if (opts.tag && this.byTag(opts.tag)?.info.running) {
      throw new CordonError('already_exists', `a running process already has tag ${opts.tag}; pick another tag or kill it first`);
    }
    const handle = this.runtime.exec(this.sandboxId, opts.spec);
    // The runtime reports the pid as the process starts, or fails once it has exited without one.
    const pid = (await handle.pid.catch(() => undefined)) ?? ++syntheticPid;
    const proc = new ManagedProcess(
      {
        pid,
        tag: opts.tag,
        cmd: opts.spec.args,
        cwd: opts.spec.cwd,
        user: opts.user,
        env: opts.env,
        pty: !!opts.spec.tty,
        running: true,
        stdinOpen: !!opts.stdin,
        startedAt: Date.now(),
      },
      handle,
      this.bufferLimit,
    );
    this.procs.set(pid, proc);
    this.pump(proc, opts);
    if (opts.stdinData?.length) handle.stdin.write(opts.stdinData);
    if (!opts.stdin) handle.stdin.end();
    return proc;
  }

  private pump(proc: ManagedProcess, opts: StartOptions): void {
    const h = proc.handle;
    const streams: Promise<void>[] = [];
    const follow = (s: NodeJS.ReadableStream | undefined, type: 'stdout' | 'stderr' | 'pty') => {
      if (!s) return;
      streams.push(
        new Promise((resolve) => {
          s.on('data', (d: Buffer) => proc.record({ type, data: d }));
          s.on('end', resolve);
          s.on('close', resolve);
          s.on('error', () => resolve());
        }),
      );
    };
    follow(h.stdout, proc.info.pty ? 'pty' : 'stdout');
    follow(h.stderr, 'stderr');
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs && opts.timeoutMs > 0) {
      timer = setTimeout(() => {
        proc.timedOut = true;
        void this.killTree(proc.info.pid).catch(() => h.signal('SIGKILL').catch(() => {}));
      }, opts.timeoutMs);
    }
    void (async () => {
      const status = await h.exited;
      // Output can still be in flight when the exit is seen; give the pipes a moment to drain.
      await Promise.race([Promise.all(streams), new Promise((r) => setTimeout(r, 2000))]);
      if (timer) clearTimeout(timer);
      // Any failure may be the kernel's OOM killer at work: 137 for a plain process, while under gVisor
      // the victim is a task of the sentry and the exec ends with whatever the sandbox reports (1, 128).
      const oomKilled = status.exitCode !== 0 && opts.oomCheck ? await opts.oomCheck().catch(() => false) : false;
      // A timeout reports 124 like timeout(1), on every surface (sync, SSE, WebSocket, CLI).
      let exitCode = oomKilled ? 137 : proc.timedOut ? 124 : status.exitCode;
      // No pid was ever reported: the runtime could not start the command at all.
      if (!oomKilled && !proc.timedOut && exitCode !== 0 && proc.info.pid > SYNTHETIC_PID_BASE) {
        const why = await diagnoseStartFailure(this.runtime, this.sandboxId, opts.spec).catch(() => undefined);
        if (why) {
          exitCode = why.exitCode;
          proc.record({ type: proc.info.pty ? 'pty' : 'stderr', data: Buffer.from(why.message) });
        }
      }
      proc.info.running = false;
      proc.info.stdinOpen = false;
      proc.info.exitedAt = Date.now();
      proc.info.exitCode = exitCode;
      proc.record({
        type: 'exit',
        exitCode,
        signal: status.signal,
        ...(proc.timedOut ? { timedOut: true } : {}),
        ...(oomKilled ? { oomKilled: true } : {}),
      });
      this.retire(proc.info.pid);
    })();
  }

  private retire(pid: number): void {
    this.finished.push(pid);
    while (this.finished.length > KEEP_FINISHED) this.procs.delete(this.finished.shift()!);
  }

  list(): ProcessInfo[] {
    return [...this.procs.values()].map((p) => p.info);
  }

  byTag(tag: string): ManagedProcess | undefined {
    let found: ManagedProcess | undefined;
    for (const p of this.procs.values()) if (p.info.tag === tag && (!found || p.info.running)) found = p;
    return found;
  }

  /** A process by pid ("123") or by tag ("tag:name" or a non-numeric name). */
  get(ref: string | number): ManagedProcess {
    const text = String(ref);
    const p = /^\d+$/.test(text) ? this.procs.get(Number(text)) : this.byTag(text.replace(/^tag:/, ''));
    if (!p) throw errors.processNotFound(text);
    return p;
  }

  async sendStdin(ref: string | number, data: Buffer): Promise<void> {
    const p = this.get(ref);
    if (!p.info.stdinOpen) throw new CordonError('invalid_state', `stdin of process ${p.info.pid} is closed; start it with stdin enabled`);
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
    if (p.info.running && this.runtime.capabilities.terminalResize === 'in-sandbox') {
      await this.helper([BB, 'sh', '-c', `${BB} stty -F /proc/$1/fd/0 rows $2 cols $3 2>/dev/null; true`, 'cordon-resize', String(p.info.pid), String(rows), String(cols)]).catch(() => {});
    }
  }

  /** SIGKILL a process and all its descendants. */
  async killTree(pid: number): Promise<void> {
    await this.helper([BB, 'sh', '-c', KILL_TREE, 'cordon-kill', String(pid)]);
  }

  /** Run a short root helper inside the sandbox and wait for it. */
  private async helper(args: string[]): Promise<void> {
    const h = this.runtime.exec(this.sandboxId, { args, env: [], cwd: '/', uid: 0, gid: 0 });
    h.stdin.end();
    h.stdout.resume();
    h.stderr?.resume();
    await h.exited;
  }

  /** Forget every process, e.g. when the sandbox stops; their runtime processes die with it. */
  clear(): void {
    this.procs.clear();
    this.finished.length = 0;
  }
}
