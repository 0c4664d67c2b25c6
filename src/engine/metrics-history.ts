import { cpus } from 'node:os';
import type { SandboxManager } from './sandbox-manager.js';

/** One resource sample of a running sandbox. */
export interface MetricSample {
  /** Unix milliseconds. */
  at: number;
  cpuCount: number;
  cpuPercent: number;
  memUsed: number;
  memTotal: number;
  diskUsed: number;
  diskTotal: number;
}

/** E2B samples every 5 s; an hour of samples per sandbox is kept in memory. */
const INTERVAL_MS = 5000;
const KEEP = 720;

/**
 * Samples every running sandbox every few seconds into a bounded ring per sandbox, so metrics can be
 * asked for a time range. CPU and memory come from the sandbox's cgroups. Disk comes from statfs of
 * a directory the daemon made, never from walking what the sandbox wrote: the loop-mounted disk of a
 * sandbox created with a disk limit, otherwise the file system its writable layer lives on (shared
 * with other sandboxes; the same figures `df /` shows inside).
 */
export class MetricsHistory {
  private readonly rings = new Map<string, MetricSample[]>();
  private timer?: NodeJS.Timeout;
  private busy = false;

  constructor(
    private readonly mgr: SandboxManager,
    private readonly intervalMs = INTERVAL_MS,
    private readonly keep = KEEP,
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.round(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Samples with `from <= at <= to` (unix ms), oldest first. */
  range(id: string, from = 0, to = Number.MAX_SAFE_INTEGER): MetricSample[] {
    return (this.rings.get(id) ?? []).filter((s) => s.at >= from && s.at <= to);
  }

  /** The newest sample of each sandbox that has one. */
  latest(): { id: string; sample: MetricSample }[] {
    return [...this.rings].flatMap(([id, ring]) => (ring.length ? [{ id, sample: ring[ring.length - 1] }] : []));
  }

  /** Take a sample of a running sandbox now and keep it (a fresh sandbox has none yet). */
  async sampleNow(id: string): Promise<MetricSample | undefined> {
    const live = this.mgr.live.get(id);
    const rec = this.mgr.store.get(id);
    if (!live || !rec || rec.state !== 'running') return undefined;
    const s = await live.stats();
    const disk = await this.disk(id, rec.spec.diskBytes);
    const sample: MetricSample = {
      at: Date.parse(s.timestamp),
      cpuCount: rec.spec.cpus ? Math.ceil(rec.spec.cpus) : cpus().length,
      cpuPercent: s.cpuPercent,
      memUsed: s.memoryUsageBytes,
      memTotal: s.memoryLimitBytes,
      ...disk,
    };
    let ring = this.rings.get(id);
    if (!ring) this.rings.set(id, (ring = []));
    if (!ring.length || ring[ring.length - 1].at < sample.at) ring.push(sample);
    if (ring.length > this.keep) ring.splice(0, ring.length - this.keep);
    return sample;
  }

  private async disk(id: string, diskBytes: number | undefined): Promise<{ diskUsed: number; diskTotal: number }> {
    const u = await this.mgr.rootfs.usage(id, diskBytes);
    return { diskUsed: u.usedBytes, diskTotal: u.totalBytes };
  }

  private async round(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      for (const id of [...this.mgr.live.keys()]) await this.sampleNow(id).catch(() => {});
      // History outlives a pause or stop, not the sandbox.
      for (const id of [...this.rings.keys()]) if (!this.mgr.store.get(id)) this.rings.delete(id);
    } finally {
      this.busy = false;
    }
  }
}
