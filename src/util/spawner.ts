import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { CordonError } from '../errors/registry.js';

/**
 * The client of cordon-spawner (spawner/main.go), the daemon's process starter. Node starts a child
 * by forking the whole daemon, which blocks its event loop for ~30 ms at its usual size (more as it
 * grows) on every mount, nft or runsc call; the spawner starts it at a fixed small cost. `run` in
 * proc.ts sends its calls here once the daemon has started one, and starts them itself otherwise.
 */

/** The spawner of this build (dist/spawner/cordon-spawner), if it was built. */
export const BUILT_SPAWNER = fileURLToPath(new URL('../../spawner/cordon-spawner', import.meta.url));

export interface SpawnRequest {
  path: string;
  args: string[];
  dir?: string;
  env?: string[];
  stdin?: Buffer;
  timeoutMs: number;
  maxOutput: number;
}

export interface SpawnAnswer {
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** A long-lived program started detached: its pid, and how it ended once it has. */
export interface DetachedChild {
  pid: number;
  exited: Promise<{ code: number; signal: NodeJS.Signals | null }>;
}

interface Wire {
  id: number;
  code: number;
  signal?: number;
  stdout?: string;
  stderr?: string;
  timedOut?: boolean;
  errno?: string;
  error?: string;
  started?: boolean;
  pid?: number;
}

/** How long past a call's own deadline its answer may take (a start's, at all) before the spawner counts as wedged. */
const ANSWER_GRACE_MS = 10_000;
const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, n]) => [n, name as NodeJS.Signals]));

export class Spawner {
  private readonly pending = new Map<number, { resolve: (a: SpawnAnswer) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  /** Detached programs by request id: waiting to be started, then to end (neither keeps the process alive). */
  private readonly detached = new Map<number, { started: (w: Wire) => void; ended: (w: Wire) => void; failed: (e: Error) => void }>();
  private nextId = 1;
  /** Detached starts not answered yet: they keep the process alive, as pending calls do. */
  private starting = 0;
  private exited = false;

  private constructor(
    private readonly child: ChildProcess,
    private readonly log: (msg: string) => void,
    private readonly graceMs: number,
  ) {
    const lines = createInterface({ input: child.stdout!, crlfDelay: Infinity });
    lines.on('line', (line) => this.answer(line));
    child.stdin!.on('error', () => {});
    // 'close', not 'exit': the answers it wrote before it ended are read first ('exit' can come before them).
    child.on('close', (code, signal) => this.gone(`exited (${signal ?? `code ${code}`})`));
    child.on('error', (e) => this.gone(e.message));
    this.idle();
  }

  /** Start the spawner binary at `path`; undefined when there is none (the caller starts processes itself). */
  static start(path: string, log: (msg: string) => void, opts: { graceMs?: number } = {}): Spawner | undefined {
    if (!existsSync(path)) return undefined;
    const child = spawn(path, [], { stdio: ['pipe', 'pipe', 'inherit'] });
    if (child.pid === undefined) {
      // Not startable (not executable, wrong architecture): say so now, rather than fail the first calls.
      child.on('error', (e) => log(`cordon-spawner ${path} cannot be started (${e.message}); the daemon starts helper programs itself`));
      return undefined;
    }
    return new Spawner(child, log, opts.graceMs ?? ANSWER_GRACE_MS);
  }

  get alive(): boolean {
    return !this.exited;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  run(req: SpawnRequest, label: string): Promise<SpawnAnswer> {
    if (this.exited) return Promise.reject(gone(label, 'had exited'));
    const id = this.nextId++;
    // Whole milliseconds: the spawner reads an integer, and a fraction would make the request unreadable.
    const line = JSON.stringify({ id, ...req, timeoutMs: Math.ceil(req.timeoutMs), stdin: req.stdin?.toString('base64') }) + '\n';
    // Within a timer's range (a longer one would fire after 1 ms).
    const guardMs = Math.min(req.timeoutMs + this.graceMs, 2 ** 31 - 1);
    return new Promise((resolve, reject) => {
      // The spawner enforces the deadline; this bounds a spawner that stopped answering.
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.idle();
        reject(gone(label, `did not answer within ${guardMs} ms`));
        this.wedged(label);
      }, guardMs);
      this.pending.set(id, { resolve, reject, timer });
      this.busy();
      this.child.stdin!.write(line);
    });
  }

  /**
   * Start a long-lived program in its own session, stdin /dev/null and its output to `log` (opened by
   * the spawner, never through a symlink); it is not bounded in time. Rejects as Node's spawn when it
   * cannot be started.
   */
  startDetached(req: { path: string; args: string[]; log: string }, label: string): Promise<DetachedChild> {
    if (this.exited) return Promise.reject(gone(label, 'had exited'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      let ended!: (w: Wire) => void;
      let failed!: (e: Error) => void;
      const exited = new Promise<{ code: number; signal: NodeJS.Signals | null }>((res, rej) => {
        ended = (w) => res({ code: w.code, signal: signalName(w.signal) });
        failed = rej;
      });
      exited.catch(() => {});
      let answered = false;
      const answer = () => {
        if (answered) return;
        answered = true;
        this.starting--;
        this.idle();
      };
      this.starting++;
      this.busy();
      // A start answers at once; one that does not is a wedged spawner's.
      const timer = setTimeout(() => {
        this.detached.delete(id);
        answer();
        reject(gone(label, `did not start it within ${this.graceMs} ms`));
        failed(gone(label, 'stopped answering'));
        this.wedged(label);
      }, this.graceMs);
      this.detached.set(id, {
        started: (w) => {
          clearTimeout(timer);
          answer();
          if (w.errno) reject(startError(w));
          else resolve({ pid: w.pid!, exited });
        },
        ended,
        failed: (e) => {
          clearTimeout(timer);
          answer();
          reject(e);
          failed(e);
        },
      });
      this.child.stdin!.write(JSON.stringify({ id, ...req, timeoutMs: 0, maxOutput: 0 }) + '\n');
    });
  }

  /** A spawner that stopped answering is ended: the calls it holds fail, later ones start without it. */
  private wedged(label: string): void {
    if (this.exited) return;
    this.log(`cordon-spawner did not answer ${label} in time; ending it`);
    this.child.kill('SIGKILL');
  }

  stop(): void {
    this.exited = true;
    this.child.kill('SIGKILL');
  }

  private answer(line: string): void {
    let w: Wire;
    try {
      w = JSON.parse(line) as Wire;
    } catch {
      this.log(`cordon-spawner wrote a line that is not JSON (${line.slice(0, 80)}); ignored`);
      return;
    }
    const d = this.detached.get(w.id);
    if (d) {
      if (w.started) return d.started(w);
      this.detached.delete(w.id);
      return w.errno ? d.started(w) : d.ended(w);
    }
    const p = this.pending.get(w.id);
    if (!p) return;
    this.pending.delete(w.id);
    clearTimeout(p.timer);
    this.idle();
    if (w.errno) return p.reject(startError(w));
    p.resolve({
      code: w.code,
      signal: signalName(w.signal),
      stdout: Buffer.from(w.stdout ?? '', 'base64').toString(),
      stderr: Buffer.from(w.stderr ?? '', 'base64').toString(),
      timedOut: !!w.timedOut,
    });
  }

  private gone(why: string): void {
    if (!this.exited) this.log(`cordon-spawner ${why}; helper programs are started by the daemon itself from now on`);
    this.exited = true;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(gone('a helper program', why));
    }
    for (const [id, d] of this.detached) {
      this.detached.delete(id);
      d.failed(gone('a detached program', why));
    }
  }

  // The spawner must not keep a process alive that has nothing else to do (the CLI, a test).
  private busy(): void {
    if (this.pending.size + this.starting === 1) this.setRef(true);
  }

  private idle(): void {
    if (this.pending.size + this.starting === 0) this.setRef(false);
  }

  private setRef(on: boolean): void {
    for (const s of [this.child, this.child.stdout, this.child.stdin] as Array<{ ref?: () => void; unref?: () => void } | null>) {
      if (on) s?.ref?.();
      else s?.unref?.();
    }
  }
}

const signalName = (n: number | undefined) => (n ? (SIGNAL_NAMES.get(n) ?? null) : null);

/** As Node's spawn fails: callers look at err.code (ENOENT: the program is not installed). */
function startError(w: Wire): Error {
  return Object.assign(new Error(w.error ?? `spawn failed: ${w.errno}`), { code: w.errno, errno: w.errno });
}

function gone(label: string, why: string): CordonError {
  return new CordonError('internal', `${label}: the daemon's process starter (cordon-spawner) ${why}, so the call's outcome is unknown. Retry; later calls start their programs without it`, { command: label });
}
