import { cpus } from 'node:os';
import type { SandboxRecord } from '../../engine/types.js';
import type { MetricSample } from '../../engine/metrics-history.js';
import { ENVD_VERSION } from './envd-context.js';
import { e2bNetworkView } from './network.js';
import type { E2bSandbox } from './tokens.js';

/**
 * E2B knows two states; a stopped cordon sandbox can be brought back with connect, like a paused one.
 * A transition shows the state it ends in: pausing is paused (connect resumes it once the pause is
 * done), snapshotting and restoring are running (they end running; requests wait or get a 409/502).
 */
export function e2bState(rec: SandboxRecord): 'running' | 'paused' | undefined {
  switch (rec.state) {
    case 'creating':
    case 'running':
    case 'snapshotting':
    case 'restoring':
      return 'running';
    case 'pausing':
    case 'paused':
    case 'stopped':
      return 'paused';
    case 'error':
      return undefined;
  }
}

const NEVER = '9999-12-31T23:59:59.000Z';
const iso = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : NEVER);

/** The Sandbox object returned by create and connect; `domain` is the daemon's --domain. */
export function sandboxCreated(rec: SandboxRecord, e2b: E2bSandbox, domain: string | undefined) {
  return {
    sandboxID: rec.id,
    templateID: rec.spec.template ?? rec.spec.image ?? 'base',
    clientID: 'cordon',
    envdVersion: ENVD_VERSION,
    envdAccessToken: e2b.envdToken,
    trafficAccessToken: e2b.trafficToken ?? null,
    domain: domain ?? null,
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
    volumeMounts: (rec.spec.volumes ?? []).map((v) => ({ name: v.name, path: v.path })),
  };
}

/**
 * SandboxDetail. lifecycle.onTimeout is what the timeout does (autoPause at create: pause); autoResume
 * wakes a paused sandbox when traffic for it arrives.
 */
export function sandboxDetail(rec: SandboxRecord, e2b: E2bSandbox | undefined, domain: string | undefined) {
  const view = e2bNetworkView(rec.spec.network);
  const o = e2b?.options ?? {};
  return {
    ...sandboxListed(rec),
    ...view,
    ...(e2b ? { envdAccessToken: e2b.envdToken } : {}),
    network: { ...view.network, allowPublicTraffic: o.allowPublicTraffic ?? true, ...(o.maskRequestHost ? { maskRequestHost: o.maskRequestHost } : {}) },
    domain: domain ?? null,
    lifecycle: { onTimeout: rec.spec.onTimeout && rec.spec.onTimeout !== 'kill' ? 'pause' : 'kill', autoResume: !!o.autoResume },
  };
}

/** One SandboxMetric sample. */
export function metricView(s: MetricSample) {
  return {
    timestamp: new Date(s.at).toISOString(),
    timestampUnix: Math.floor(s.at / 1000),
    cpuCount: s.cpuCount,
    cpuUsedPct: s.cpuPercent,
    memUsed: s.memUsed,
    memTotal: s.memTotal,
    memCache: 0,
    diskUsed: s.diskUsed,
    diskTotal: s.diskTotal,
  };
}
