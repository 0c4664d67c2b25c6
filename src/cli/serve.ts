import type { Command } from 'commander';
import { defaultConfig, RUNTIME_NAMES, type RuntimeName } from '../config.js';
import { createDaemon } from '../daemon.js';
import { parseDuration, parseSize } from '../util/units.js';

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

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('run the cordon daemon')
    .option('--listen <host:port>', 'address to serve the API on', '127.0.0.1:7070')
    .option('--data-dir <dir>', 'where state, templates and sandboxes live', '/var/lib/cordon')
    .option('--api-key <key>', 'require this API key (default: $CORDON_API_KEY; required off loopback)')
    .option('--runtime <name>', `default runtime (${RUNTIME_NAMES.join('|')})`, 'runsc')
    .option('--max-sandboxes <n>', 'refuse new sandboxes past this many (429)', '100')
    .option('--min-host-memory <size>', 'refuse new sandboxes when less host memory is available (503)', '256m')
    .option('--default-timeout <duration>', 'timeout for sandboxes that do not set one (0 = none)', '0')
    .option('--runsc-platform <name>', 'gVisor platform: systrap or ptrace', 'systrap')
    .option('--templates-dir <dir>', 'where built templates are kept (default DATA/templates); daemons may share one')
    .option('--debian-mirror <url>', 'Debian mirror for the base template (default: the host apt sources)')
    .option('--insecure-registry <host:port>', 'allow pulling from this registry over plain HTTP (repeatable)', (v: string, p: string[] = []) => [...p, v], [])
    .option('--egress-interface <iface>', 'host interface sandbox egress leaves through (none: sandboxes get no network)')
    .option('--upstream-ca <file>', 'extra CA (PEM) trusted for upstream TLS besides the system store')
    .option('--dns-server <ip>', 'DNS server the sandbox resolver asks, through the egress interface (repeatable)', (v: string, p: string[] = []) => [...p, v], [])
    .option('--network-slot <n>', 'host network slot 0-31 (nft table cordonN, 100.(96+N).0.0/16); one per daemon', '0')
    .option('--default-network <mode>', 'network mode of sandboxes that choose none: none|allowlist|open', 'none')
    .option('--stream-buffer <size>', 'unread output one client stream may hold before the process is paused', '8m')
    .option('--stream-write-deadline <duration>', 'cut off a client stream that stays above --stream-buffer this long', '60s')
    .option('--egress-idle-timeout <duration>', 'egress proxy: fail a connection idle (no bytes either way) this long', '60s')
    .option('--egress-max-connections <n>', 'egress proxy: concurrent connections per sandbox; more are refused', '256')
    .action(async (o) => {
      const { host, port } = hostPort(o.listen);
      if (!RUNTIME_NAMES.includes(o.runtime)) throw new Error(`--runtime must be one of ${RUNTIME_NAMES.join(', ')}`);
      const cfg = defaultConfig({
        listenHost: host,
        listenPort: port,
        dataDir: o.dataDir,
        apiKey: o.apiKey ?? process.env.CORDON_API_KEY ?? undefined,
        defaultRuntime: o.runtime as RuntimeName,
        maxSandboxes: Number(o.maxSandboxes),
        minHostMemoryBytes: parseSize(o.minHostMemory) ?? 256 * 1024 * 1024,
        defaultTimeoutMs: parseDuration(o.defaultTimeout) ?? 0,
        runscPlatform: o.runscPlatform,
        debianMirror: o.debianMirror,
        templatesDir: o.templatesDir,
        insecureRegistries: o.insecureRegistry,
        egressInterface: o.egressInterface,
        upstreamCaFile: o.upstreamCa,
        upstreamDns: o.dnsServer,
        netSlot: Number(o.networkSlot),
        defaultNetworkMode: o.defaultNetwork,
        streamHighWaterBytes: sizeFlag('--stream-buffer', o.streamBuffer, 64 * 1024),
        streamWriteDeadlineMs: durationFlag('--stream-write-deadline', o.streamWriteDeadline, 1000),
        egressIdleTimeoutMs: durationFlag('--egress-idle-timeout', o.egressIdleTimeout, 1000),
        egressMaxConnections: (() => {
          const n = Number(o.egressMaxConnections);
          if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`--egress-max-connections must be an integer from 1 to 65535, got ${o.egressMaxConnections}`);
          return n;
        })(),
      });
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
