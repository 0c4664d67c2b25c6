import type { NetworkSpec, PortForward } from '../net/types.js';
import type { RootfsSource } from './types.js';

// The two things a sandbox needs besides its container, behind small interfaces injected into the
// SandboxManager: its root filesystem and its network. Today the host provides both (an overlay per
// sandbox, a network namespace per sandbox); a backend that owns them (Kubernetes, later) gives its own.

/** Where a sandbox's files are on the host. */
export interface RootfsDirs {
  /** The sandbox's own directory (image config, checkpoint images, whatever else it keeps). */
  root: string;
  /** The OCI bundle the runtime is given. */
  bundle: string;
  /** The mounted root filesystem the container sees. */
  rootfs: string;
}

export interface RootfsDriver {
  /** Make the sandbox's filesystem from the image's layers (with a disk limit) and mount it. */
  prepare(id: string, source: RootfsSource, diskBytes?: number): Promise<RootfsDirs>;
  /** Mount it again (a start after a stop, or after a host reboot); nothing when it is mounted. */
  mount(id: string): Promise<void>;
  /** Unmount it, keeping its files for a later start. */
  unmount(id: string): Promise<void>;
  /** Unmount and delete everything of it; safe to call twice. */
  destroy(id: string): Promise<void>;
  dirs(id: string): RootfsDirs;
  /** The sandbox's read-only layers (top-most first) and the host directory of its writable layer. */
  layers(id: string): Promise<{ lowerDirs: string[]; upper: string }>;
  /** Bytes used and available on the file system the sandbox writes to. */
  usage(id: string, diskBytes?: number): Promise<{ usedBytes: number; totalBytes: number }>;
  /**
   * Move a stopped sandbox's writable layer (whiteouts kept) to `dest`, without the helper mount
   * points the engine placed in it: a template build step's result. Absent where files are not on the host.
   */
  takeUpper?(id: string, dest: string): Promise<void>;
  /** Lower dirs of every sandbox on disk (layers that must not be deleted). */
  lowerDirsInUse?(): Promise<string[]>;
}

/** A bind mount the container gets. */
export interface BindMount {
  source: string;
  destination: string;
  readOnly: boolean;
}

/** What a booting sandbox gets from the network: the namespace its runtime joins, and files to see. */
export interface NetworkAttachment {
  netnsPath: string;
  binds: BindMount[];
}

/** A sandbox that is still running when the daemon starts, whose network may be taken over. */
export interface RunningNetworkedSandbox {
  id: string;
  network?: NetworkSpec;
  /** Whether a link rebuilt now would be seen by the sandbox (capabilities.networkLink 'live'). */
  relink: boolean;
}

export interface NetworkDriver {
  /** Refuse what this daemon cannot enforce, before anything is created. */
  validate(spec: NetworkSpec): void;
  /** Give a booting sandbox its namespace, policy and forwards. */
  attach(id: string, spec: NetworkSpec, dirs: RootfsDirs): Promise<NetworkAttachment>;
  /** Take it all away again; nothing when the sandbox has none. */
  detach(id: string): Promise<void>;
  /** Whether the sandbox has a namespace now. */
  attached(id: string): boolean;
  /** Apply changed rules (allow, deny, interception, mode) to new connections at once. */
  updatePolicy(id: string, spec: NetworkSpec): Promise<void>;
  addForward(id: string, f: PortForward): Promise<void>;
  removeForward(id: string, local: number): void;
  /** Bytes the sandbox received and sent over its link (0 without one). */
  counters(id: string): Promise<{ rx: number; tx: number }>;
  /**
   * At start-up: take over the network of sandboxes that kept running, remove what others left.
   * Returns the ids whose network could not be taken over.
   */
  restore(running: RunningNetworkedSandbox[], log: (msg: string) => void): Promise<string[]>;
}
