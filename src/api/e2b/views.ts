import { cpus } from 'node:os';
import type { SandboxRecord } from '../../engine/types.js';
import type { SandboxStats } from '../../engine/live-sandbox.js';
import { ENVD_VERSION } from './envd-context.js';
import { e2bNetworkView } from './network.js';

/** E2B knows two states; a stopped cordon sandbox can be brought back with connect, like a paused one. */
export function e2bState(rec: SandboxRecord): 'running' | 'paused' | undefined {
  if (rec.state === 'running' || rec.state === 'creating') return 'running';
  if (rec.state === 'paused' || rec.state === 'stopped') return 'paused';
  return undefined;
}

const NEVER = '9999-12-31T23:59:59.000Z';
const iso = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : NEVER);

/** The Sandbox object returned by create and connect. */
export function sandboxCreated(rec: SandboxRecord, envdAccessToken: string) {
  return {
    sandboxID: rec.id,
    templateID: rec.spec.template ?? rec.spec.image ?? 'base',
    clientID: 'cordon',
    envdVersion: ENVD_VERSION,
    envdAccessToken,
    trafficAccessToken: null,
    domain: null,
  };
}

/** ListedSandbox / SandboxDetail. */
export function sandboxListed(rec: SandboxRecord) {
  return {
    sandboxID: rec.id,
    templateID: rec.spec.template ?? rec.spec.image ?? 'base',
    clientID: 'cordon',
    startedAt: iso(rec.startedAt ?? rec.createdAt),
    endAt: iso(rec.expiresAt),
    cpuCount: rec.spec.cpus ? Math.ceil(rec.spec.cpus) : cpus().length,
    memoryMB: Math.round(rec.spec.memoryBytes / (1024 * 1024)),
    diskSizeMB: rec.spec.diskBytes ? Math.round(rec.spec.diskBytes / (1024 * 1024)) : 0,
    envdVersion: ENVD_VERSION,
    metadata: rec.labels,
    state: e2bState(rec)!,
    volumeMounts: [],
  };
}

export function sandboxDetail(rec: SandboxRecord) {
  return { ...sandboxListed(rec), ...e2bNetworkView(rec.spec.network), domain: null, lifecycle: { onTimeout: 'kill', autoResume: false } };
}

/** One SandboxMetric sample. */
export function metricView(rec: SandboxRecord, s: SandboxStats) {
  const ts = new Date(s.timestamp);
  return {
    timestamp: ts.toISOString(),
    timestampUnix: Math.floor(ts.getTime() / 1000),
    cpuCount: rec.spec.cpus ? Math.ceil(rec.spec.cpus) : cpus().length,
    cpuUsedPct: s.cpuPercent,
    memUsed: s.memoryUsageBytes,
    memTotal: s.memoryLimitBytes,
    memCache: 0,
    diskUsed: 0, // not measured yet; the overlay upper dir has no cheap size
    diskTotal: rec.spec.diskBytes ?? 0,
  };
}
