import { isIPv4 } from 'node:net';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LAYER_LIMITS } from './image/oci/layer-limits.js';
import { capabilitiesOf } from './runtime/capabilities.js';

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
  /** Refuse new sandboxes (429) past this many; the default is derived from the host (hostSandboxCap). */
  maxSandboxes: number;
  /** Creates that run at once (they are CPU heavy); more wait in a queue of createQueue, then get 429. */
  maxConcurrentCreates: number;
  createQueue: number;
  /** Refuse new sandboxes (503) while CPU pressure (PSI cpu "some" avg10, percent) is at least this; 0 = off. */
  maxCpuPressure: number;
  /** Deadline of each runtime call (create, start, delete, pause, ...); state/kill/list get at most 15 s. */
  runtimeTimeoutMs: number;
  /** Runtime binaries to use instead of the ones on PATH (custom builds, test wrappers). */
  runtimeBinaries?: Partial<Record<RuntimeName, string>>;
  /** Events kept per sandbox (oldest pruned first); 0 = all. */
  eventRetention: number;
  /** Events older than this are pruned; 0 = no age limit. */
  eventMaxAgeMs: number;
  /** Refuse new sandboxes (503) when the host has less memory available than this. */
  minHostMemoryBytes: number;
  defaultTimeoutMs: number;
  /** serve --idle-pause: pause a running sandbox after this long without activity (0: never). */
  idlePauseMs: number;
  /** serve --idle-pause-disk: a sandbox frozen for idleness this long goes to disk (0: only under memory pressure). */
  idlePauseDiskMs: number;
  maxTimeoutMs: number;
  defaultMemoryBytes: number;
  defaultPids: number;
  /** Largest JSON body accepted (413 past it); file uploads stream and are not bound by it. */
  bodyLimitBytes: number;
  /** Output kept per process for reconnects (oldest dropped first). */
  processOutputBufferBytes: number;
  /** Processes and file helpers one sandbox may run through the API at once (each is a host process too). */
  maxProcesses: number;
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
  /** Bytes of tar one image layer (or import archive) may produce once decompressed. */
  maxLayerBytes: number;
  /** Tar entries one image layer may hold. */
  maxLayerEntries: number;
  /** Registries (host[:port]) that may be pulled from over plain HTTP; loopback ones always may. */
  insecureRegistries?: string[];
  /** Host interface sandbox egress leaves through; without it only network mode none is possible. */
  egressInterface?: string;
  /** Extra CA (PEM file) trusted for upstream TLS besides the system store. */
  upstreamCaFile?: string;
  /** DNS servers the daemon's resolver asks (through the egress interface) when a sandbox names none. */
  upstreamDns?: string[];
  /** Daemon environment variables a sandbox's `NAME@hosts` secret may take its value from. */
  secretEnv?: string[];
  /** Which of 32 host-network slots (nft table, address block) this daemon owns. */
  netSlot?: number;
  /** Upstream and sandbox-side idle (read) timeout of the egress proxy. */
  egressIdleTimeoutMs: number;
  /** Concurrent proxied connections one sandbox may hold; more are refused. */
  egressMaxConnections: number;
  /** Network mode of sandboxes that do not choose one. */
  defaultNetworkMode?: 'none' | 'allowlist' | 'open';
  /** E2B: the domain whose "PORT-SANDBOXID.DOMAIN" hosts reach sandbox ports (wildcard DNS points at the daemon). */
  domain?: string;
  /** E2B: the largest file one /files upload may write (after gzip is undone). */
  maxUploadBytes: number;
  /** Run the cordon agent in every sandbox (processes, files and watches go through it); off: the runtime's exec path only. */
  agent: 'on' | 'off';
  /** The agent binary to inject (default: dist/agent/cordon-agent of this build). */
  agentBinary?: string;
  /** Serve Prometheus metrics on GET /metrics (behind the API key like the rest). */
  metrics: 'on' | 'off';
  /** Also export per-sandbox CPU and memory gauges (one series per sandbox). */
  metricsPerSandbox: boolean;
  /** One structured log line per API request. */
  requestLog: 'on' | 'off';
  logLevel: LogLevel;
  /** Host directories below which --mount type=bind|overlay sources may be; none: every host mount is refused. */
  allowMountRoots: string[];
  /** Disk that must stay free where snapshots are kept once a snapshot's layer is copied (507 otherwise). */
  snapshotReserveBytes: number;
  /** Sandboxes one fork request may create. */
  maxForks: number;
}

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];

/** Sandboxes this host can keep without idle overhead starving it, as the runtime declares per core. */
export function hostSandboxCap(runtime: RuntimeName, platform: DaemonConfig['runscPlatform'], cores = availableParallelism()): number {
  return Math.max(1, cores) * capabilitiesOf(runtime, platform).sandboxesPerCore;
}

export function defaultConfig(overrides: Partial<DaemonConfig> = {}): DaemonConfig {
  const runtime = overrides.defaultRuntime ?? 'runsc';
  const platform = overrides.runscPlatform ?? 'systrap';
  return {
    listenHost: '127.0.0.1',
    listenPort: 7070,
    dataDir: '/var/lib/cordon',
    defaultRuntime: runtime,
    runscPlatform: platform,
    maxSandboxes: hostSandboxCap(runtime, platform),
    maxConcurrentCreates: Math.max(2, availableParallelism()),
    createQueue: 32,
    maxCpuPressure: 90,
    runtimeTimeoutMs: 60_000,
    eventRetention: 10_000,
    eventMaxAgeMs: 0,
    minHostMemoryBytes: 256 * 1024 * 1024,
    defaultTimeoutMs: 0,
    idlePauseMs: 0,
    idlePauseDiskMs: 10 * 60_000,
    maxTimeoutMs: 24 * 3600 * 1000,
    defaultMemoryBytes: 512 * 1024 * 1024,
    defaultPids: 1024,
    bodyLimitBytes: 8 * 1024 * 1024,
    processOutputBufferBytes: 1024 * 1024,
    maxProcesses: 256,
    execOutputLimitBytes: 16 * 1024 * 1024,
    streamHighWaterBytes: 8 * 1024 * 1024,
    streamWriteDeadlineMs: 60_000,
    egressIdleTimeoutMs: 60_000,
    egressMaxConnections: 256,
    maxLayerBytes: DEFAULT_LAYER_LIMITS.maxBytes,
    maxLayerEntries: DEFAULT_LAYER_LIMITS.maxEntries,
    maxUploadBytes: 10 * 1024 * 1024 * 1024,
    agent: 'on',
    metrics: 'on',
    metricsPerSandbox: false,
    requestLog: 'on',
    logLevel: 'info',
    allowMountRoots: [],
    snapshotReserveBytes: 1024 * 1024 * 1024,
    maxForks: 16,
    // An override given as undefined (a flag not passed) keeps the default.
    ...(Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)) as Partial<DaemonConfig>),
  };
}

export function dataPaths(dataDir: string, templatesDir?: string) {
  return {
    db: join(dataDir, 'cordon.db'),
    templates: templatesDir ?? join(dataDir, 'templates'),
    sandboxes: join(dataDir, 'sandboxes'),
    runtimeRoot: (rt: RuntimeName) => join(dataDir, 'run', rt),
    tmp: join(dataDir, 'tmp'),
    volumes: join(dataDir, 'volumes'),
    mounts: join(dataDir, 'mounts'),
    gates: join(dataDir, 'gates'),
    snapshots: join(dataDir, 'snapshots'),
  };
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\./.test(host);
}

/**
 * The nameservers of a resolv.conf, as the default for --dns-server. Upstream queries leave only
 * through the egress interface, over IPv4, so loopback (a local stub like 127.0.0.53) and IPv6
 * servers are of no use: they come back in `skipped`.
 */
export function resolvConfServers(text: string): { usable: string[]; skipped: string[] } {
  const usable: string[] = [];
  const skipped: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    if (isIPv4(m[1]) && !/^127\./.test(m[1]) && m[1] !== '0.0.0.0') usable.push(m[1]);
    else skipped.push(m[1]);
  }
  return { usable: [...new Set(usable)], skipped };
}
