import type { ExecHandle, ExecSpec } from '../runtime/types.js';
import type { StreamDrop } from './output-fanout.js';
import type { StartFailure } from './start-failure.js';

/**
 * A started process as the process manager sees it: the runtime's exec handle, plus what the
 * sandbox's agent can do better when the process runs under it.
 */
export interface ProcessHandle extends ExecHandle {
  /** SIGKILL the process and every descendant in one step (else the manager runs a helper). */
  killTree?(): Promise<void>;
  /** Why the command never started, when the launcher knows it (else the manager asks inside). */
  startFailure?: Promise<StartFailure | undefined>;
  /** Resolves if the process's streams are lost for good (its agent died); no exit status follows. */
  lost?: Promise<StreamDrop>;
  /** The exit and the output were taken: whoever runs the process may forget it. */
  release?(): void;
  /** A resize reaches the process's terminal itself (no relay in between that drops it). */
  readonly resizesNatively?: boolean;
}

/** What is kept with an agent-run process so that a restarted daemon can list it again. */
export interface ProcessMeta {
  /** cordon's id for the process ("p-N"): unique in its sandbox, unlike a pid, which can come back. */
  id: string;
  tag?: string;
  cmd: string[];
  cwd: string;
  user: string;
  env: Record<string, string>;
  pty: boolean;
  startedAt: number;
}

/** Starts a process in the sandbox (through the agent, or the runtime's exec). */
export type Launcher = (spec: ExecSpec, meta: ProcessMeta) => Promise<ProcessHandle>;
