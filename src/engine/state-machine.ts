import { errors } from '../errors/registry.js';
import type { SandboxState } from './types.js';

export type Action = 'start' | 'stop' | 'pause' | 'resume' | 'exec' | 'files' | 'update' | 'stats' | 'timeout';

// Which actions each state allows; everything else is a 409 that says what would work.
const ALLOWED: Record<SandboxState, Action[]> = {
  creating: [],
  running: ['stop', 'pause', 'exec', 'files', 'update', 'stats', 'timeout'],
  paused: ['stop', 'resume', 'stats', 'timeout', 'update'],
  stopped: ['start', 'timeout'],
  error: ['start', 'stop'],
};

const HINTS: Record<SandboxState, string> = {
  creating: 'Wait until it is running.',
  running: 'It is already running.',
  paused: 'Resume it first (POST .../resume).',
  stopped: 'Start it first (POST .../start).',
  error: 'Inspect its state_reason, then start it again or remove it.',
};

export function assertAllowed(id: string, state: SandboxState, action: Action): void {
  if (!ALLOWED[state].includes(action)) throw errors.wrongState(id, state, action, HINTS[state]);
}
