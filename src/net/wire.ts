import type { DaemonConfig } from '../config.js';
import type { SandboxStore } from '../store/sandboxes.js';
import { NO_TELEMETRY, type Telemetry } from '../telemetry/telemetry.js';
import { secretEnvFrom } from './secrets.js';
import { NetworkService } from './service.js';

/** The daemon's network service; network events land in the sandbox's event log as type "network",
 *  written in batches (a busy sandbox makes many). */
export function createNetworkService(cfg: DaemonConfig, store: SandboxStore, telemetry: Telemetry = NO_TELEMETRY): NetworkService {
  const mode = cfg.defaultNetworkMode ?? 'none';
  if (!['none', 'allowlist', 'open'].includes(mode)) throw new Error('--default-network must be none, allowlist or open');
  if (mode !== 'none' && !cfg.egressInterface) throw new Error(`--default-network ${mode} needs --egress-interface`);
  return new NetworkService(
    {
      dataDir: cfg.dataDir,
      slot: cfg.netSlot ?? 0,
      egressInterface: cfg.egressInterface,
      upstreamCaFile: cfg.upstreamCaFile,
      dnsServers: cfg.upstreamDns ?? [],
      defaultMode: mode,
      secretEnv: secretEnvFrom(cfg.secretEnv ?? [], process.env),
      idleTimeoutMs: cfg.egressIdleTimeoutMs,
      maxConnections: cfg.egressMaxConnections,
    },
    (id, e) => {
      // DNS refusals are reported here too, and counted by the resolver itself.
      if (e.method !== 'DNS') telemetry.egressRequest(e.blocked, e.request_bytes, e.response_bytes);
      if (!store.get(id)) return;
      const verdict = e.blocked ? `blocked (${e.block_reason})` : `${e.status}`;
      store.queueEvent(id, 'network', `${e.method || 'CONNECT'} ${e.url} ${verdict}`, { ...e });
    },
    telemetry,
  );
}
