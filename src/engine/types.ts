import type { RuntimeName } from '../config.js';
import type { NetworkSpec } from '../net/types.js';
import type { RuntimeState } from '../runtime/types.js';
import type { FileRule } from '../volume/file-rules.js';
import type { HostMount } from '../volume/host-mounts.js';
import type { VolumeMount } from './volumes.js';
import type { S3SyncSpec } from '../s3/sync-spec.js';

/**
 * Lifecycle states. pausing, snapshotting and restoring are transitions that hold the sandbox's lock
 * while its runtime writes or reads a checkpoint; a record is seen in one only while that runs, or
 * after the daemon stopped in the middle of it (the supervisor settles it at the next start).
 */
export type SandboxState = 'creating' | 'running' | 'pausing' | 'paused' | 'snapshotting' | 'restoring' | 'stopped' | 'error';

export interface TmpfsMount {
  path: string;
  sizeBytes: number;
  options?: string[];
}

/** A sandbox's configuration after validation and defaults; stored as JSON with the record. */
export interface SandboxSpec {
  template?: string;
  image?: string;
  pullPolicy?: 'missing' | 'always' | 'never';
  runtime: RuntimeName;
  env: Record<string, string>;
  workdir?: string;
  cmd?: string[];
  user?: string;
  cpus?: number;
  memoryBytes: number;
  pids: number;
  diskBytes?: number;
  timeoutMs: number;
  readOnlyRootfs: boolean;
  tmpfs: TmpfsMount[];
  /** Named volumes mounted at create (rw or ro). */
  volumes?: VolumeMount[];
  /** Host directories (bind or overlay) under the daemon's --allow-mount-root. */
  mounts?: HostMount[];
  /** File rules on bind/overlay mounts and volumes (served through a file gate); first match decides. */
  fileRules?: FileRule[];
  /** Sandbox paths under mounts or volumes whose file operations become `file` events. */
  fileEvents?: string[];
  /** S3 syncs (hooks, on demand) and S3 mounts; the credentials only by name. */
  s3Sync?: S3SyncSpec[];
  hostname?: string;
  /** Set no_new_privs on every process: setuid binaries such as sudo grant nothing. */
  noNewPrivileges?: boolean;
  /** Egress policy, secrets, interception rules and forwarded ports; absent means no network. */
  network?: NetworkSpec;
  /** The snapshot this sandbox was created (or forked) from; its layers lie below the sandbox's own. */
  snapshot?: string;
  /** What the timeout does: remove the sandbox (kill, the default), pause it, or stop it (files kept). */
  onTimeout?: 'kill' | 'pause' | 'stop';
  /** false: never paused for idleness (serve --idle-pause); absent: the daemon's setting applies. */
  idlePause?: boolean;
}

export interface SandboxRecord {
  id: string;
  state: SandboxState;
  stateReason?: string;
  runtime: RuntimeName;
  spec: SandboxSpec;
  labels: Record<string, string>;
  /** What the runtime said about the running container (opaque; given back to it on wait and adopt). */
  runtimeState?: RuntimeState;
  createdAt: number;
  updatedAt: number;
  startedAt?: number;
  expiresAt?: number;
}

export interface SandboxEvent {
  seq: number;
  sandboxId: string;
  ts: number;
  type: string;
  message: string;
  data?: Record<string, unknown>;
}

/** What an image or template contributes to a sandbox: its layers and the config Docker would honour. */
export interface ImageConfig {
  env: string[];
  workdir?: string;
  /**
   * E2B: no step of the template gave a WORKDIR (the one above is where its build ran), so its
   * sandboxes start commands in the user's home. A WORKDIR in a later build clears it.
   */
  homeWorkdir?: boolean;
  user?: string;
  entrypoint?: string[];
  cmd?: string[];
}

/** A template's service: started in the background at create, which returns once `ready` exits 0. */
export interface TemplateStart {
  cmd: string;
  ready?: string;
  readyTimeoutMs?: number;
}

export interface RootfsSource {
  /** Read-only layer directories, top-most first (overlayfs lowerdir order). */
  lowerDirs: string[];
  config: ImageConfig;
  /** A name for display: "template:base" or an image reference. */
  ref: string;
  /** A built template's start and ready commands. */
  start?: TemplateStart;
}
