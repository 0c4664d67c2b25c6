import type { S3SyncOptions } from './s3.js';
// Shapes of the /v1 API as the SDK returns them.

export type SandboxState = 'creating' | 'running' | 'pausing' | 'paused' | 'snapshotting' | 'restoring' | 'stopped' | 'error';
export type RuntimeName = 'runsc' | 'crun' | 'runc';

export interface SandboxInfo {
  id: string;
  state: SandboxState;
  state_reason: string | null;
  runtime: RuntimeName;
  template: string | null;
  image: string | null;
  /** The snapshot it was made (or forked) from. */
  snapshot: string | null;
  labels: Record<string, string>;
  created_at: string;
  started_at: string | null;
  expires_at: string | null;
  config: {
    env: Record<string, string>;
    workdir: string | null;
    cmd: string[] | null;
    user: string | null;
    cpus: number | null;
    memory: number;
    pids: number;
    disk: number | null;
    timeout_ms: number;
    on_timeout: 'kill' | 'pause' | 'stop';
    idle_pause: boolean;
    read_only_rootfs: boolean;
    tmpfs: { path: string; size: number; options: string[] }[];
    volumes: { name: string; id: string; path: string; read_only: boolean }[];
    mounts: { type: 'bind' | 'overlay'; source: string; target: string; read_only: boolean }[];
    file_rules: { action: 'allow' | 'block'; ops: string[]; path: string }[];
    file_events: string[];
    s3_sync: (Required<Omit<S3SyncOptions, 'endpoint' | 'max_file_size'>> & { endpoint: string | null; max_file_size: number })[];
    hostname: string | null;
    no_new_privileges: boolean;
  };
  /** Network mode and policy (secret values are never shown). */
  network?: { mode: 'none' | 'allowlist' | 'open'; [k: string]: unknown };
}

export interface CreateOptions {
  template?: string;
  /** Make the sandbox from this snapshot (id or name); its files, and under runsc its memory and processes. */
  snapshot?: string;
  image?: string;
  /** For images: pull when missing (default), always, or never. */
  pull_policy?: 'missing' | 'always' | 'never';
  runtime?: RuntimeName;
  env?: Record<string, string>;
  workdir?: string;
  cmd?: string[];
  entrypoint?: string[];
  user?: string;
  cpus?: number;
  memory?: string | number;
  pids?: number;
  disk?: string | number;
  timeout?: string | number;
  /** What the timeout does: kill (remove, default), pause, or stop (files kept). */
  on_timeout?: 'kill' | 'pause' | 'stop';
  /** false: never paused for idleness by `serve --idle-pause`. */
  idle_pause?: boolean;
  labels?: Record<string, string>;
  read_only_rootfs?: boolean;
  tmpfs?: { path: string; size?: string | number; options?: string[] }[];
  /** Named volumes (by name or id) mounted at `path`, read-write unless read_only. */
  volumes?: { name: string; path: string; read_only?: boolean }[];
  /** Docker's --mount: host directories under the daemon's --allow-mount-root (bind, overlay) and tmpfs. */
  mounts?: { type: 'bind' | 'overlay' | 'tmpfs'; source?: string; target: string; read_only?: boolean; tmpfs_size?: string | number }[];
  /** File rules on bind/overlay mounts and volumes, first match decides: a blocked operation fails with EACCES and is recorded. */
  file_rules?: { action: 'allow' | 'block'; ops?: ('read' | 'write' | 'create' | 'remove' | 'rename' | 'chmod' | 'chown' | 'list' | '*')[]; path: string }[];
  /** Sandbox paths (under mounts or volumes) whose file operations appear as `file` events. */
  file_events?: string[];
  /** S3 syncs: hooks (pull at create/start, push at stop/snapshot/remove), on_demand (sync call only), mount (s3fs). */
  s3_sync?: S3SyncOptions[];
  hostname?: string;
  /** Set no_new_privs on every process: setuid binaries such as sudo grant nothing (default false). */
  no_new_privileges?: boolean;
  /** Egress policy, secrets, ports in (see the network API). */
  network?: NetworkOptions;
}

export interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  timeout?: string | number;
  stdin?: string | Buffer;
}

export interface ExecResult {
  exit_code: number;
  stdout: string;
  stderr: string;
  duration_ms: number;
  timed_out: boolean;
  oom_killed: boolean;
  truncated: boolean;
}

export interface ProcessInfo {
  /** cordon's id for the process (p-N); unlike the pid it is never reused within a sandbox. */
  id: string;
  pid: number;
  tag: string | null;
  cmd: string[];
  cwd: string;
  user: string;
  pty: boolean;
  running: boolean;
  stdin_open: boolean;
  started_at: string;
  exited_at: string | null;
  exit_code: number | null;
}

export type ProcessEvent =
  | { type: 'start'; pid: number }
  | { type: 'stdout' | 'stderr' | 'pty'; data: Buffer }
  | { type: 'exit'; exit_code: number; signal: string | null; timed_out: boolean; oom_killed: boolean };

export interface FileInfo {
  name: string;
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  permissions: string;
  owner: string;
  group: string;
  modified_at: string;
  symlink_target: string | null;
}

export interface SandboxStats {
  cpu_percent: number;
  memory_usage: number;
  memory_limit: number;
  memory_percent: number;
  pid_count: number;
  network_rx: number;
  network_tx: number;
  disk_read: number;
  disk_write: number;
  oom_kills: number;
  timestamp: string;
}

export interface SandboxEvent {
  seq: number;
  ts: string;
  type: string;
  message: string;
  data: Record<string, unknown> | null;
}

/** The `network` object of a create request. */
export interface NetworkOptions {
  mode?: 'none' | 'allowlist' | 'open';
  allow_hosts?: string[];
  deny_hosts?: string[];
  add_hosts?: { host: string; ip: string }[];
  /** NAME=VALUE@host1,host2 or NAME@hosts (value from the daemon's environment). */
  secrets?: string[];
  dns_servers?: string[];
  mtu?: number;
  /** [LOCAL:]REMOTE */
  ports?: string[];
  rules?: Record<string, unknown>[];
}

export interface SnapshotInfo {
  id: string;
  name: string | null;
  /** The id the E2B SDK uses. */
  snapshot_id: string;
  source_sandbox: string;
  runtime: RuntimeName;
  /** memory: files, memory and processes (runsc); filesystem: files only (crun, runc). */
  kind: 'memory' | 'filesystem';
  size_bytes: number;
  layers: number;
  created_at: string;
  users?: { sandboxes: string[]; snapshots: string[] };
}

/** One fork's outcome: the new sandbox, or the error that kept it from starting. */
export interface ForkResult {
  sandbox?: SandboxInfo;
  error?: { code: string; message: string };
}
