import { readFileSync } from 'node:fs';
import { spawn, type SpawnOptions } from 'node:child_process';
import { CordonError } from '../errors/registry.js';
import { open } from 'node:fs/promises';
import type { DetachedChild, Spawner } from './spawner.js';

export interface RunResult {
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions extends SpawnOptions {
  input?: string | Buffer;
  /** Kill the program (its whole process group) when it has not finished by then. */
  timeoutMs?: number;
  /** How errors name the call, e.g. "crun delete" (default: the program and its first arguments). */
  label?: string;
}

/** A helper program that had not finished by its deadline. */
export const DEFAULT_DEADLINE_MS = 30_000;
/** Output kept per stream; helper programs print little, so more than this is noise. */
const MAX_OUTPUT_BYTES = 4 * 1024 * 1024;

export function deadlineError(label: string, ms: number, what = 'finish'): CordonError {
  return new CordonError(
    'deadline_exceeded',
    `${label} did not ${what} within ${formatSeconds(ms)} and was killed; the host may be overloaded or the program wedged. Retry; if it keeps happening, check that program on the host`,
    { command: label, timeout_ms: ms },
  );
}

const formatSeconds = (ms: number) => `${Number((ms / 1000).toFixed(1))}s`;

/** Signal a whole process group (a helper started by run/spawnDetached leads its own). */
export function killGroup(pid: number | undefined, sig: NodeJS.Signals = 'SIGKILL'): void {
  if (!pid) return;
  try {
    process.kill(-pid, sig);
  } catch {
    /* already gone */
  }
}

let spawner: Spawner | undefined;

/** Start helper programs through this spawner from now on (the daemon's; undefined: start them here). */
export function useSpawner(s: Spawner | undefined): void {
  spawner = s;
}

/** The options a spawner carries; a call with any other (stdio, uid, ...) is started here. */
const SPAWNER_OPTIONS = new Set(['input', 'timeoutMs', 'label', 'cwd', 'env']);
/** Largest deadline a timer takes (Node fires a longer one after 1 ms). */
const MAX_DEADLINE_MS = 2 ** 31 - 1;

/** Node refuses a NUL in a string it passes (program, arguments, cwd, environment: ERR_INVALID_ARG_VALUE): such a call goes there to fail alike. */
const hasNul = (strings: string[]) => strings.some((s) => s.includes('\0'));

/** Whether the spawner can carry this call. */
function spawnerCarries(cmd: string, args: string[], opts: RunOptions): boolean {
  if (!spawner?.alive || !Object.keys(opts).every((k) => SPAWNER_OPTIONS.has(k))) return false;
  return !hasNul([cmd, ...args, String(opts.cwd ?? ''), ...Object.entries(opts.env ?? {}).flatMap(([k, v]) => [k, v ?? ''])]);
}

/**
 * Run a helper program to completion, capturing output. Never uses a shell. It runs in its own
 * process group, and the whole group is killed at the deadline: the promise then rejects with a
 * deadline_exceeded error naming the call, instead of waiting on a wedged program forever.
 */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const { input, timeoutMs: asked = DEFAULT_DEADLINE_MS, label = `${cmd} ${args.slice(0, 3).join(' ')}`.trim(), ...spawnOpts } = opts;
  if (!(asked > 0)) return Promise.reject(new RangeError(`run ${label}: timeoutMs must be a positive number of ms, got ${asked}`));
  // Past a timer's range (~24.8 days, Infinity) the deadline is the range's end, not at once.
  const timeoutMs = Math.min(asked, MAX_DEADLINE_MS);
  if (spawnerCarries(cmd, args, opts)) return runThrough(spawner!, cmd, args, { input, timeoutMs, label, cwd: spawnOpts.cwd, env: spawnOpts.env });
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...spawnOpts, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    const out = collector();
    const err = collector();
    child.stdout!.on('data', out.add);
    child.stderr!.on('data', err.add);
    const timer = setTimeout(() => {
      killGroup(child.pid);
      // Descendants in other groups may still hold the pipes; do not wait for them.
      child.stdout!.destroy();
      child.stderr!.destroy();
      reject(deadlineError(label, timeoutMs));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, signal, stdout: out.text(), stderr: err.text() });
    });
    child.stdin!.on('error', () => {});
    child.stdin!.end(input ?? '');
  });
}

/**
 * Start a long-lived program in its own session (the shim a container lives under): stdin /dev/null,
 * stdout and stderr to the file `log`. It may outlive the daemon, so nothing waits for it but `exited`.
 */
export async function startDetached(cmd: string, args: string[], o: { log: string; label: string }): Promise<DetachedChild> {
  if (spawner?.alive && !hasNul([cmd, ...args])) return spawner.startDetached({ path: cmd, args, log: o.log }, o.label);
  const log = await open(o.log, 'w');
  try {
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', log.fd, log.fd] });
    child.unref();
    const exited = new Promise<{ code: number; signal: NodeJS.Signals | null }>((resolve, reject) => {
      child.on('error', reject);
      child.on('exit', (code, signal) => resolve({ code: code ?? -1, signal }));
    });
    // A program that cannot be started fails here, as through the spawner.
    if (!child.pid) await exited;
    return { pid: child.pid!, exited };
  } finally {
    await log.close();
  }
}

async function runThrough(s: Spawner, cmd: string, args: string[], o: { input?: string | Buffer; timeoutMs: number; label: string; cwd?: string | URL; env?: NodeJS.ProcessEnv }): Promise<RunResult> {
  const env = o.env && Object.entries(o.env).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${v}`]));
  const a = await s.run(
    {
      path: cmd,
      args,
      dir: o.cwd === undefined ? undefined : String(o.cwd instanceof URL ? o.cwd.pathname : o.cwd),
      env,
      stdin: o.input === undefined ? undefined : Buffer.from(o.input),
      timeoutMs: o.timeoutMs,
      maxOutput: MAX_OUTPUT_BYTES,
    },
    o.label,
  );
  if (a.timedOut) throw deadlineError(o.label, o.timeoutMs);
  return { code: a.code, signal: a.signal, stdout: a.stdout, stderr: a.stderr };
}

function collector() {
  const chunks: Buffer[] = [];
  let size = 0;
  return {
    add: (d: Buffer) => {
      if (size >= MAX_OUTPUT_BYTES) return;
      chunks.push(d.subarray(0, MAX_OUTPUT_BYTES - size));
      size += d.length;
    },
    text: () => Buffer.concat(chunks).toString(),
  };
}

/** Like run, but throws with the program's stderr when it exits non-zero. */
export async function runOk(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    const label = opts.label ?? `${cmd} ${args.slice(0, 3).join(' ')}`;
    throw new Error(`${label} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Whether a pid names a live process (zombies count as gone). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}
