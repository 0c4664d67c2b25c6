import type { Readable, Writable } from 'node:stream';
import type { RuntimeName } from '../config.js';
import type { TmpfsMount } from '../engine/types.js';

/** Everything a backend needs to start a sandbox's container; the engine has prepared the rootfs. */
export interface ContainerSpec {
  id: string;
  bundleDir: string;
  rootfsDir: string;
  readOnlyRootfs: boolean;
  hostname: string;
  cpus?: number;
  memoryBytes: number;
  pids: number;
  tmpfs: TmpfsMount[];
  binds: { source: string; destination: string; readOnly: boolean }[];
  /** Join this network namespace (set up by the net layer) instead of a fresh empty one. */
  netnsPath?: string;
  /** Set no_new_privs on the init: setuid binaries and file capabilities grant nothing. */
  noNewPrivileges?: boolean;
  /**
   * The container's first process; default: tini keeping the sandbox up with an idle sleep. Only
   * processes descended from it survive a runsc restore: gVisor kills whatever `exec` started.
   */
  init?: string[];
  /**
   * The sandbox connects to a Unix socket on the host through one of its bind mounts (the agent's
   * channel); gVisor refuses that unless told (--host-uds=open).
   */
  hostSockets?: boolean;
}

export interface ExecSpec {
  args: string[];
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  additionalGids?: number[];
  /** Allocate a terminal of this size; stdout then carries both streams. */
  tty?: { cols: number; rows: number };
  /** RLIMIT_NPROC for this process tree (gVisor's way to bound processes). */
  nproc?: number;
  /** Set no_new_privs on the process: setuid binaries (sudo) and file capabilities grant nothing. */
  noNewPrivileges?: boolean;
}

export interface ExitStatus {
  exitCode: number;
  signal?: string;
}

/** A process started inside a sandbox. Streams are the host side of its stdio. */
export interface ExecHandle {
  stdin: Writable;
  stdout: Readable;
  /** Absent when the process has a terminal. */
  stderr?: Readable;
  /** The process's pid as seen inside the sandbox. */
  pid: Promise<number>;
  exited: Promise<ExitStatus>;
  signal(sig: NodeJS.Signals): Promise<void>;
  resize(cols: number, rows: number): void;
}

export type ContainerStatus = 'running' | 'paused' | 'stopped' | 'missing';

export interface ContainerStats {
  cpuUsageNs: number;
  memoryUsageBytes: number;
  memoryLimitBytes: number;
  pids: number;
  diskReadBytes: number;
  diskWriteBytes: number;
  oomKills: number;
}

/**
 * What a backend can do, declared by each one so that nothing above the runtime layer decides
 * behaviour by a runtime's name.
 */
export interface RuntimeCapabilities {
  /** Save a running container's processes and memory to files and start it again from them. */
  checkpoint: 'memory' | 'none';
  /** The container's files live in a host directory the engine owns (the overlay upper), so they can be copied while it is stopped or frozen. */
  fsSnapshot: boolean;
  /** The memory limit can change while the container runs. */
  liveMemoryUpdate: boolean;
  /**
   * 'native': resizing the host side of a terminal reaches the process. 'in-sandbox': the runtime relays
   * the terminal through a pty of its own and drops the new size, so it must also be set from inside.
   */
  terminalResize: 'native' | 'in-sandbox';
  /** How a sandbox's process limit is applied: the pids cgroup, or RLIMIT_NPROC per process (gVisor counts its own threads in the cgroup). */
  processLimit: 'cgroup' | 'rlimit';
  /** Who filters system calls: a seccomp profile on the host kernel, or the sandbox's own kernel. */
  seccomp: 'profile' | 'sandbox-kernel';
  /**
   * 'at-start': the sandbox's network stack copies the link's configuration when it starts (gVisor's
   * netstack), so a link rebuilt later is never seen. 'live': the kernel's namespace, which sees it.
   */
  networkLink: 'at-start' | 'live';
  /**
   * The runtime itself opens the sandbox's /etc/passwd and /etc/group for every process it starts
   * (runc does, to fill in HOME and groups): a FIFO there would block it, so the engine checks first.
   */
  readsAccountFiles: boolean;
  /** Idle sandboxes one core carries without the overhead starving the host (the default --max-sandboxes per core). */
  sandboxesPerCore: number;
}

/**
 * What a backend keeps about a container it started, as plain JSON. The engine stores it with the
 * sandbox and hands it back (wait, adopt) without looking inside; each backend validates its own.
 */
export type RuntimeState = Readonly<Record<string, unknown>>;

/** How a container ended. */
export interface ContainerExit {
  /** The kernel's OOM killer ended a process of the sandbox (its memory limit). */
  oomKilled: boolean;
}

export interface CheckpointOptions {
  /** Keep the container running after the image is written; otherwise it is gone afterwards and its memory freed. */
  leaveRunning: boolean;
  /**
   * Without leaveRunning: return once the image is complete and leave the stopped (frozen) container
   * for the caller to `delete` (in the background: the sandbox process takes a second or more to exit).
   * The caller knows the container runs (so the runtime need not ask first).
   */
  deferDelete?: boolean;
}

/**
 * The contract every isolation backend fulfils. The engine never calls a runtime binary itself,
 * so a microVM or Kubernetes backend can be added by implementing this interface.
 */
export interface Runtime {
  readonly name: RuntimeName;
  readonly capabilities: RuntimeCapabilities;
  /** Throws with a message naming what to install when the backend cannot work here. */
  check(): Promise<void>;
  /** Create and start the container's init; returns the state to store and give back later. */
  create(spec: ContainerSpec): Promise<RuntimeState>;
  /**
   * After a daemon restart: the status of the container a stored state describes. 'missing' when it
   * is gone, or when what runs under its id is not that container (its init exited, a pid was reused).
   */
  adopt(id: string, state: RuntimeState | undefined): Promise<ContainerStatus>;
  /**
   * Resolves when the container has exited (at once when it already has), saying how. Rejects with
   * an AbortError when `signal` aborts first.
   */
  wait(id: string, state: RuntimeState | undefined, signal?: AbortSignal): Promise<ContainerExit>;
  /** Whether the container is still up right now (cheap and synchronous: asked when a process fails). */
  alive(id: string, state: RuntimeState | undefined): boolean;
  status(id: string): Promise<ContainerStatus>;
  exec(id: string, spec: ExecSpec): ExecHandle;
  /** Send a signal to every process of the container. */
  killAll(id: string, sig: NodeJS.Signals): Promise<void>;
  /** Stop the sandbox's processes (a checkpoint's freeze: the runtime can still be asked things). */
  pause(id: string): Promise<void>;
  /** Undo pause() or freeze(), whichever stopped it. */
  resume(id: string): Promise<void>;
  /**
   * Stop everything of the sandbox, its kernel and helpers included where it has them, so that it
   * costs no CPU until resume() (its memory stays). While frozen the runtime cannot be asked anything
   * that needs the sandbox to answer: status() says 'paused' and resume() is the way back.
   */
  freeze(id: string): Promise<void>;
  /**
   * Write the container's processes and memory to `dir` (capabilities.checkpoint 'memory'; otherwise
   * a not_implemented error naming the capability). Without leaveRunning the container is deleted.
   */
  checkpoint(id: string, dir: string, opts: CheckpointOptions): Promise<void>;
  /**
   * Start the container `spec.id` again from the image a checkpoint wrote to `dir`. The spec must give
   * the same bundle, rootfs and mounts as the checkpointed container had.
   */
  restore(spec: ContainerSpec, dir: string): Promise<RuntimeState>;
  /** Remove the container whatever its state; succeeds when it is already gone. */
  delete(id: string, bundleDir?: string): Promise<void>;
  /** Ids of all containers this backend holds, to find orphans after a crash. */
  list(): Promise<string[]>;
  stats(id: string): Promise<ContainerStats>;
  setMemoryLimit(id: string, bytes: number): Promise<void>;
}
