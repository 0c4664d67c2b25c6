import type { SandboxManager } from '../engine/sandbox-manager.js';
import type { ScrapeSources } from './prometheus.js';

/** What a scrape reads from the engine: counts from the store, samples from the metrics history. */
export function engineSources(mgr: () => SandboxManager): ScrapeSources {
  return {
    sandboxCounts: () => mgr().countByStateAndRuntime(),
    warmPools: () => mgr().templateFast?.poolStats() ?? [],
    sandboxSamples: () =>
      mgr()
        .metrics.latest()
        .flatMap(({ id, sample }) => {
          const rec = mgr().store.get(id);
          return rec?.state === 'running' ? [{ id, runtime: rec.runtime, cpuPercent: sample.cpuPercent, memoryBytes: sample.memUsed }] : [];
        }),
  };
}
