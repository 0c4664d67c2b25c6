import { errors } from '../errors/registry.js';
import type { SandboxState } from './types.js';

export type Action = 'start' | 'stop' | 'pause' | 'resume' | 'exec' | 'files' | 'update' | 'stats' | 'timeout' | 'snapshot';

// Which actions each state allows; everything else is a 409 that says what would work.
const ALLOWED: Record<SandboxState, Action[]> = {
  creating: [],
  running: ['stop', 'pause', 'exec', 'files', 'update', 'stats', 'timeout', 'snapshot'],
  // Writing the checkpoint: its processes are frozen and their memory is going to disk.
  pausing: ['timeout'],
  paused: ['stop', 'resume', 'stats', 'timeout', 'update'],
  // A snapshot of a running sandbox: frozen while its memory and files are copied, then running again.
  snapshotting: ['stats', 'timeout'],
  // Started again from a checkpoint; nothing runs in it until that is done.
  restoring: ['timeout'],
  stopped: ['start', 'timeout'],
  error: ['start', 'stop'],
};

const HINTS: Record<SandboxState, string> = {
  creating: 'Wait until it is running.',
  running: 'It is already running.',
  pausing: 'It is being paused; wait until it is paused, then resume it.',
  paused: 'Resume it first (POST .../resume).',
  snapshotting: 'A snapshot is being taken; retry when it is running again (in a moment).',
  restoring: 'It is being restored; wait until it is running.',
  stopped: 'Start it first (POST .../start).',
  error: 'Inspect its state_reason, then start it again or remove it.',
};

export function assertAllowed(id: string, state: SandboxState, action: Action): void {
  if (!ALLOWED[state].includes(action)) throw errors.wrongState(id, state, action, HINTS[state]);
}

/** States of a sandbox that has (or is getting, or is giving up) a container: it counts against the cap. */
export const ACTIVE_STATES: readonly SandboxState[] = ['creating', 'running', 'pausing', 'paused', 'snapshotting', 'restoring'];

/** States in which the sandbox's container runs or is frozen, or is in a checkpoint transition. */
export function hasContainer(state: SandboxState): boolean {
  return state === 'running' || state === 'paused' || isTransition(state);
}

/** The checkpoint transitions; a record left in one by a daemon that stopped is settled at start-up. */
export function isTransition(state: SandboxState): state is 'pausing' | 'snapshotting' | 'restoring' {
  return state === 'pausing' || state === 'snapshotting' || state === 'restoring';
}
