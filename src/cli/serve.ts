import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { defaultConfig, LOG_LEVELS, resolvConfServers, RUNTIME_NAMES, type LogLevel, type RuntimeName } from '../config.js';
import { parseDuration, parseSize } from '../util/units.js';

/** A whole-number flag value at least `min` (undefined when the flag was not given). */
function count(flag: string, v: string | undefined, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new Error(`${flag} must be a whole number from ${min} to ${max}, got ${v}`);
  return n;
}

function duration(flag: string, v: string | undefined, minMs = 0): number | undefined {
  if (v === undefined) return undefined;
  const ms = parseDuration(v);
  if (ms === undefined || ms < minMs) throw new Error(`${flag} must be a duration such as 30s, 5m or 7d${minMs ? ` (at least ${minMs} ms)` : ''}, got ${v}`);
  return ms;
}

/** --runtime-binary NAME=PATH, repeatable. */
function runtimeBinaries(list: string[]): Partial<Record<RuntimeName, string>> {
  const out: Partial<Record<RuntimeName, string>> = {};
  for (const item of list) {
    const m = /^([a-z]+)=(\/.+)$/.exec(item);
    if (!m || !RUNTIME_NAMES.includes(m[1] as RuntimeName)) throw new Error(`--runtime-binary must look like crun=/usr/local/bin/crun (runtime ${RUNTIME_NAMES.join('|')}, absolute path), got ${item}`);
    out[m[1] as RuntimeName] = m[2];
  }
  return out;
}

function sizeFlag(flag: string, text: string, min: number): number {
  const v = parseSize(text);
  if (v === undefined || v < min) throw new Error(`${flag} must be a size of at least ${min} bytes (e.g. 8m), got ${text}`);
  return v;
}

function durationFlag(flag: string, text: string, minMs: number): number {
  const v = parseDuration(text);
  if (v === undefined || v < minMs) throw new Error(`${flag} must be a duration of at least ${minMs} ms (e.g. 60s), got ${text}`);
  return v;
}

function hostPort(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen);
  if (!m) throw new Error(`--listen must look like 127.0.0.1:7070, got ${listen}`);
  return { host: m[1] ?? m[2], port: Number(m[3]) };
}

/** --dns-server, or by default the host's /etc/resolv.conf servers that can be reached from the egress interface. */
function upstreamDns(given: string[], egress: string | undefined): string[] {
  if (given.length) return given;
  let text = '';
  try {
    text = readFileSync('/etc/resolv.conf', 'utf8');
  } catch {
    /* no resolv.conf: no default */
  }
  const { usable, skipped } = resolvConfServers(text);
  if (egress) {
    for (const s of skipped) console.error(`ignoring DNS server ${s} from /etc/resolv.conf: upstream lookups leave through --egress-interface ${egress} over IPv4, so loopback and IPv6 servers cannot be asked; pass --dns-server IP`);
    if (!usable.length) console.error('no DNS server for sandbox lookups: /etc/resolv.conf names none usable; pass --dns-server IP');
  }
  return usable;
}
/** The key in --api-key-file: its first line, trimmed; an empty or unreadable file is an error. */
export function apiKeyFromFile(file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`--api-key-file ${file} cannot be read (${(e as Error).message}); create it with: umask 077; openssl rand -hex 32 > ${file}`);
  }
  const key = text.split('\n')[0].trim();
  if (key.length < 16) throw new Error(`--api-key-file ${file} must hold a key of at least 16 characters on its first line`);
  return key;
}
const DOMAIN = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$/;

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('run the cordon daemon')
    .option('--listen <host:port>', 'address to serve the API on', '127.0.0.1:7070')
    .option('--data-dir <dir>', 'where state, templates and sandboxes live', '/var/lib/cordon')
    .option('--api-key <key>', 'require this API key (default: $CORDON_API_KEY; required off loopback)')
    .option('--api-key-file <file>', 'read the API key from this file (what cordon service install uses; keep it mode 0600)')
    .option('--runtime <name>', `default runtime (${RUNTIME_NAMES.join('|')})`, 'runsc')
    .option('--idle-pause <duration>', 'freeze a running sandbox in memory after this long without exec, file, process-output, envd or port traffic (no CPU; the next call resumes it in milliseconds) (default: off)')
    .option('--idle-pause-disk <duration>', 'with --idle-pause: a sandbox frozen this long is paused to disk where the runtime checkpoints memory (runsc), freeing its memory; 0 = only when host memory runs short', '10m')
    .option('--max-sandboxes <n>', 'refuse new sandboxes past this many (429; default from cores and runtime: 25/core runsc systrap, 150/core ptrace, 100/core crun/runc)')
    .option('--max-concurrent-creates <n>', 'creates that run at once (default: cores, at least 2); more wait in the create queue')
    .option('--create-queue <n>', 'creates that may wait for a slot; past it 429 with Retry-After', '32')
    .option('--max-cpu-pressure <percent>', 'refuse new sandboxes (503) while PSI cpu "some avg10" is at least this (0 = off)', '90')
    .option('--runtime-timeout <duration>', 'deadline of each runtime call (create, start, delete, ...); a call past it is killed', '60s')
    .option('--runtime-binary <name=path>', 'use this binary for a runtime instead of the one on PATH (custom builds, tests; repeatable)', (v: string, p: string[] = []) => [...p, v], [])
    .option('--event-retention <n>', 'events kept per sandbox, oldest pruned first (0 = all)', '10000')
    .option('--event-max-age <duration>', 'prune events older than this (0 = no age limit)', '0')
    .option('--min-host-memory <size>', 'refuse new sandboxes when less host memory is available (503)', '256m')
    .option('--default-timeout <duration>', 'timeout for sandboxes that do not set one (0 = none)', '0')
    .option('--runsc-platform <name>', 'gVisor platform: systrap or ptrace', 'systrap')
    .option('--templates-dir <dir>', 'where built templates are kept (default DATA/templates); daemons may share one')
    .option('--debian-mirror <url>', 'Debian mirror for the base template (default: the host apt sources; "host" builds it from this Debian host\'s installed packages, also the fallback when the mirror cannot be reached)')
    .option('--max-layer-size <size>', 'largest an image layer (or import archive) may be once decompressed (413 past it)', '16g')
    .option('--max-layer-entries <n>', 'most files an image layer may hold (413 past it)', '1000000')
    .option('--insecure-registry <host:port>', 'allow pulling from this registry over plain HTTP (repeatable)', (v: string, p: string[] = []) => [...p, v], [])
    .option('--egress-interface <iface>', 'host interface sandbox egress leaves through (none: sandboxes get no network)')
    .option('--upstream-ca <file>', 'extra CA (PEM) trusted for upstream TLS besides the system store')
    .option('--dns-server <ip>', 'DNS server the sandbox resolver asks, through the egress interface (repeatable; default: the nameservers of /etc/resolv.conf)', (v: string, p: string[] = []) => [...p, v], [])
    .option('--secret-env <name>', 'daemon environment variable a NAME@hosts secret may take its value from (repeatable; no other variable is offered)', (v: string, p: string[] = []) => [...p, v], [])
    .option('--network-slot <n>', 'host network slot 0-31 (nft table cordonN, 100.(96+N).0.0/16); one per daemon', '0')
    .option('--default-network <mode>', 'network mode of sandboxes that choose none: none|allowlist|open', 'none')
    .option('--domain <domain>', 'E2B: serve "PORT-SANDBOXID.DOMAIN" hosts (point wildcard DNS for *.DOMAIN at the daemon)')
    .option('--max-upload <size>', 'E2B: largest file one /files upload may write, after gzip is undone', '10g')
    .option('--max-processes <n>', 'processes and file operations one sandbox may run through the API at once (each is a host process too); more get 429', '256')
    .option('--stream-buffer <size>', 'unread output one client stream may hold before the process is paused', '8m')
    .option('--stream-write-deadline <duration>', 'cut off a client stream that stays above --stream-buffer this long', '60s')
    .option('--agent <on|off>', 'run the cordon agent in every sandbox (processes, files, watches); off: the runtime exec path only', 'on')
    .option('--allow-mount-root <dir>', 'host directory below which --mount type=bind|overlay sources may be (repeatable; none: every host mount is refused)', (v: string, p: string[] = []) => [...p, v], [])
    .option('--agent-binary <path>', 'the agent binary to inject into sandboxes (default: dist/agent/cordon-agent of this build)')
    .option('--snapshot-reserve <size>', 'disk that must stay free where snapshots are kept after a snapshot is copied (507 otherwise)', '1g')
    .option('--max-forks <n>', 'sandboxes one fork request may create', '16')
    .option('--egress-idle-timeout <duration>', 'egress proxy: fail a connection idle (no bytes either way) this long', '60s')
    .option('--egress-max-connections <n>', 'egress proxy: concurrent connections per sandbox; more are refused', '256')
    .option('--metrics <on|off>', 'serve Prometheus metrics on GET /metrics (behind the API key)', 'on')
    .option('--metrics-per-sandbox', 'also export CPU and memory gauges per sandbox (one series each: mind the cardinality)')
    .option('--request-log <on|off>', 'one structured line per API request on stdout (JSON, or pretty on a terminal)', 'on')
    .option('--log-level <level>', `least severe log lines written: ${LOG_LEVELS.join('|')}`, 'info')
    .action(async (o) => {
      const { host, port } = hostPort(o.listen);
      for (const f of ['metrics', 'requestLog'] as const) {
        if (o[f] !== 'on' && o[f] !== 'off') throw new Error(`--${f === 'metrics' ? 'metrics' : 'request-log'} must be on or off, got ${o[f]}`);
      }
      if (!LOG_LEVELS.includes(o.logLevel)) throw new Error(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got ${o.logLevel}`);
      if (!RUNTIME_NAMES.includes(o.runtime)) throw new Error(`--runtime must be one of ${RUNTIME_NAMES.join(', ')}`);
      const maxLayerBytes = parseSize(o.maxLayerSize);
      if (!maxLayerBytes) throw new Error(`--max-layer-size must be a size above zero such as 16g or 512m, got ${o.maxLayerSize}`);
      const maxLayerEntries = Number(o.maxLayerEntries);
      if (!Number.isSafeInteger(maxLayerEntries) || maxLayerEntries < 1) throw new Error(`--max-layer-entries must be a whole number above zero, got ${o.maxLayerEntries}`);
      const domain = o.domain === undefined ? undefined : String(o.domain).toLowerCase().replace(/\.$/, '');
      if (domain !== undefined && !DOMAIN.test(domain)) throw new Error(`--domain must be a DNS name such as sandbox.example.com, got ${o.domain}`);
      const maxUpload = parseSize(o.maxUpload);
      if (!maxUpload || maxUpload <= 0) throw new Error(`--max-upload must be a size such as 512m or 10g, got ${o.maxUpload}`);
      if (o.agent !== 'on' && o.agent !== 'off') throw new Error(`--agent must be on or off, got ${o.agent}`);
      if (o.agentBinary !== undefined && !String(o.agentBinary).startsWith('/')) throw new Error(`--agent-binary must be an absolute path, got ${o.agentBinary}`);
      const cfg = defaultConfig({
        listenHost: host,
        listenPort: port,
        dataDir: o.dataDir,
        apiKey: o.apiKey ?? apiKeyFromFile(o.apiKeyFile) ?? process.env.CORDON_API_KEY ?? undefined,
        defaultRuntime: o.runtime as RuntimeName,
        maxSandboxes: count('--max-sandboxes', o.maxSandboxes, 1),
        maxConcurrentCreates: count('--max-concurrent-creates', o.maxConcurrentCreates, 1),
        createQueue: count('--create-queue', o.createQueue),
        maxCpuPressure: count('--max-cpu-pressure', o.maxCpuPressure, 0, 100),
        runtimeTimeoutMs: duration('--runtime-timeout', o.runtimeTimeout, 500),
        runtimeBinaries: runtimeBinaries(o.runtimeBinary),
        eventRetention: count('--event-retention', o.eventRetention),
        eventMaxAgeMs: duration('--event-max-age', o.eventMaxAge),
        minHostMemoryBytes: parseSize(o.minHostMemory) ?? 256 * 1024 * 1024,
        defaultTimeoutMs: parseDuration(o.defaultTimeout) ?? 0,
        idlePauseMs: duration('--idle-pause', o.idlePause, 1000) ?? 0,
        idlePauseDiskMs: duration('--idle-pause-disk', o.idlePauseDisk) ?? 0,
        runscPlatform: o.runscPlatform,
        debianMirror: o.debianMirror,
        templatesDir: o.templatesDir,
        insecureRegistries: o.insecureRegistry,
        maxLayerBytes,
        maxLayerEntries,
        egressInterface: o.egressInterface,
        upstreamCaFile: o.upstreamCa,
        upstreamDns: upstreamDns(o.dnsServer, o.egressInterface),
        secretEnv: o.secretEnv,
        netSlot: Number(o.networkSlot),
        defaultNetworkMode: o.defaultNetwork,
        domain,
        maxUploadBytes: maxUpload,
        agent: o.agent,
        agentBinary: o.agentBinary,
        metrics: o.metrics,
        metricsPerSandbox: !!o.metricsPerSandbox,
        requestLog: o.requestLog,
        logLevel: o.logLevel as LogLevel,
        allowMountRoots: (o.allowMountRoot as string[]).map((d) => {
          if (!d.startsWith('/')) throw new Error(`--allow-mount-root must be an absolute path, got ${d}`);
          return d;
        }),
        maxProcesses: count('--max-processes', o.maxProcesses, 1),
        snapshotReserveBytes: sizeFlag('--snapshot-reserve', o.snapshotReserve, 0),
        maxForks: count('--max-forks', o.maxForks, 1, 1000),
        streamHighWaterBytes: sizeFlag('--stream-buffer', o.streamBuffer, 64 * 1024),
        streamWriteDeadlineMs: durationFlag('--stream-write-deadline', o.streamWriteDeadline, 1000),
        egressIdleTimeoutMs: durationFlag('--egress-idle-timeout', o.egressIdleTimeout, 1000),
        egressMaxConnections: (() => {
          const n = Number(o.egressMaxConnections);
          if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`--egress-max-connections must be an integer from 1 to 65535, got ${o.egressMaxConnections}`);
          return n;
        })(),
      });
      // Loaded here, not at the top: every other command would pay for the whole daemon at startup.
      const { createDaemon } = await import('../daemon.js');
      const daemon = await createDaemon(cfg);
      const url = await daemon.listen();
      console.error(`cordon ${cfg.defaultRuntime} daemon listening on ${url} (data in ${cfg.dataDir})`);
      const shutdown = async () => {
        await daemon.close().catch(() => {});
        process.exit(0);
      };
      process.on('SIGINT', shutdown);
      process.on('SIGTERM', shutdown);
    });
}
