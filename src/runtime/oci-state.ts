import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { pidAlive } from '../util/proc.js';
import type { RuntimeState } from './types.js';

/**
 * What an OCI command-line backend keeps about a running container: the host pid of its init and
 * when that process started, so that a pid the kernel has since given to another process is never
 * taken for the container. Rows written before the start time was kept have only the pid.
 */
export interface OciState {
  pid: number;
  /** Start time of the init (clock ticks after boot, /proc/PID/stat field 22). */
  started?: number;
}

/** The state of a container whose init has host pid `pid`. */
export function ociState(pid: number): OciState {
  const started = processStart(pid);
  return started === undefined ? { pid } : { pid, started };
}

/** Read back a stored state; undefined when it is not one of ours (the container then counts as gone). */
export function parseOciState(s: RuntimeState | undefined): OciState | undefined {
  const pid = s?.pid;
  const started = s?.started;
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) return undefined;
  if (started !== undefined && (typeof started !== 'number' || !Number.isSafeInteger(started))) return undefined;
  return started === undefined ? { pid } : { pid, started };
}

function processStart(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces and parentheses) start at field 3.
    const v = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[22 - 3]);
    return Number.isSafeInteger(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Whether the container's init still runs (and is the same process). */
export function initAlive(s: OciState | undefined): boolean {
  if (!s || !pidAlive(s.pid)) return false;
  return s.started === undefined || processStart(s.pid) === s.started;
}

// Polled often at first (a stop waits on this), then once a second (a watch over the sandbox's life).
const FAST_POLL_MS = 20;
const FAST_FOR_MS = 2000;
const SLOW_POLL_MS = 1000;

/** Resolves when the init has exited; rejects with an AbortError when `signal` aborts first. */
export async function initExited(s: OciState | undefined, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted();
  const since = Date.now();
  while (initAlive(s)) {
    await sleep(Date.now() - since < FAST_FOR_MS ? FAST_POLL_MS : SLOW_POLL_MS, undefined, { signal });
  }
}
