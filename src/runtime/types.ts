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
 * The contract every isolation backend fulfils. The engine never calls a runtime binary itself,
 * so a microVM or Kubernetes backend can be added by implementing this interface.
 */
export interface Runtime {
  readonly name: RuntimeName;
  /** Throws with a message naming what to install when the backend cannot work here. */
  check(): Promise<void>;
  /** Create and start the container's init; returns the host pid that keeps it alive. */
  create(spec: ContainerSpec): Promise<{ initPid: number }>;
  status(id: string): Promise<ContainerStatus>;
  exec(id: string, spec: ExecSpec): ExecHandle;
  /** Send a signal to every process of the container. */
  killAll(id: string, sig: NodeJS.Signals): Promise<void>;
  pause(id: string): Promise<void>;
  resume(id: string): Promise<void>;
  /** Remove the container whatever its state; succeeds when it is already gone. */
  delete(id: string, bundleDir?: string): Promise<void>;
  /** Ids of all containers this backend holds, to find orphans after a crash. */
  list(): Promise<string[]>;
  stats(id: string): Promise<ContainerStats>;
  setMemoryLimit(id: string, bytes: number): Promise<void>;
}
