import { join } from 'node:path';

export type RuntimeName = 'runsc' | 'crun' | 'runc';
export const RUNTIME_NAMES: readonly RuntimeName[] = ['runsc', 'crun', 'runc'];

/** Daemon settings; every one has a default so `cordon serve` needs no flags. */
export interface DaemonConfig {
  listenHost: string;
  listenPort: number;
  dataDir: string;
  apiKey?: string;
  defaultRuntime: RuntimeName;
  /** gVisor platform: systrap (fast syscalls) or ptrace. */
  runscPlatform: 'systrap' | 'ptrace';
  maxSandboxes: number;
  /** Refuse new sandboxes (503) when the host has less memory available than this. */
  minHostMemoryBytes: number;
  defaultTimeoutMs: number;
  maxTimeoutMs: number;
  defaultMemoryBytes: number;
  defaultPids: number;
  /** Largest JSON body accepted (413 past it); file uploads stream and are not bound by it. */
  bodyLimitBytes: number;
  /** Output kept per process for reconnects (oldest dropped first). */
  processOutputBufferBytes: number;
  /** Output returned by a synchronous exec (413-like truncation flag past it). */
  execOutputLimitBytes: number;
  /** Bytes a stream to a client (SSE, WebSocket, Connect) may hold unread before its source is paused. */
  streamHighWaterBytes: number;
  /** How long a stream may stay above its high-water mark before the client is cut off. */
  streamWriteDeadlineMs: number;
  /** Debian mirror for the base template; empty means "read the host's apt sources". */
  debianMirror?: string;
  /** Where built templates live (default DATA/templates); daemons may share one. */
  templatesDir?: string;
  /** Registries (host[:port]) that may be pulled from over plain HTTP; loopback ones always may. */
  insecureRegistries?: string[];
  /** Host interface sandbox egress leaves through; without it only network mode none is possible. */
  egressInterface?: string;
  /** Extra CA (PEM file) trusted for upstream TLS besides the system store. */
  upstreamCaFile?: string;
  /** DNS servers the daemon's resolver asks (through the egress interface) when a sandbox names none. */
  upstreamDns?: string[];
  /** Which of 32 host-network slots (nft table, address block) this daemon owns. */
  netSlot?: number;
  /** Upstream and sandbox-side idle (read) timeout of the egress proxy. */
  egressIdleTimeoutMs: number;
  /** Concurrent proxied connections one sandbox may hold; more are refused. */
  egressMaxConnections: number;
  /** Network mode of sandboxes that do not choose one. */
  defaultNetworkMode?: 'none' | 'allowlist' | 'open';
}

export function defaultConfig(overrides: Partial<DaemonConfig> = {}): DaemonConfig {
  return {
    listenHost: '127.0.0.1',
    listenPort: 7070,
    dataDir: '/var/lib/cordon',
    defaultRuntime: 'runsc',
    runscPlatform: 'systrap',
    maxSandboxes: 100,
    minHostMemoryBytes: 256 * 1024 * 1024,
    defaultTimeoutMs: 0,
    maxTimeoutMs: 24 * 3600 * 1000,
    defaultMemoryBytes: 512 * 1024 * 1024,
    defaultPids: 1024,
    bodyLimitBytes: 8 * 1024 * 1024,
    processOutputBufferBytes: 1024 * 1024,
    execOutputLimitBytes: 16 * 1024 * 1024,
    streamHighWaterBytes: 8 * 1024 * 1024,
    streamWriteDeadlineMs: 60_000,
    egressIdleTimeoutMs: 60_000,
    egressMaxConnections: 256,
    ...overrides,
  };
}

export function dataPaths(dataDir: string, templatesDir?: string) {
  return {
    db: join(dataDir, 'cordon.db'),
    templates: templatesDir ?? join(dataDir, 'templates'),
    sandboxes: join(dataDir, 'sandboxes'),
    runtimeRoot: (rt: RuntimeName) => join(dataDir, 'run', rt),
    tmp: join(dataDir, 'tmp'),
  };
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\./.test(host);
}
