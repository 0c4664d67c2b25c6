import { CordonError, errors } from '../errors/registry.js';
import type { SandboxManager } from './sandbox-manager.js';
import type { SandboxRecord } from './types.js';

export interface ForkOptions {
  count: number;
  /** Lifetime of each fork (0: none); default the daemon's default timeout. */
  timeoutMs?: number;
}

/** One fork's outcome: the new sandbox, or why it could not start (each fork passes admission on its own). */
export type ForkResult = { sandbox: SandboxRecord; error?: undefined } | { sandbox?: undefined; error: CordonError };

/**
 * Fork a running sandbox: one snapshot of its current state (it runs on afterwards), then `count`
 * sandboxes made from it, each with its own id, writable layer, network namespace and address, under
 * the parent's policy and labels. Each fork succeeds or fails alone. The snapshot is the engine's:
 * it is not listed, its checkpoint image is dropped once the forks are restored, and its layer goes
 * with the last fork.
 */
export class Forks {
  constructor(private readonly mgr: SandboxManager) {}

  async fork(parentId: string, opts: ForkOptions): Promise<ForkResult[]> {
    const { cfg, snapshots, store } = this.mgr;
    if (!Number.isInteger(opts.count) || opts.count < 1 || opts.count > cfg.maxForks) {
      throw errors.invalid('count', `a fork makes 1 to ${cfg.maxForks} sandboxes (cordon serve --max-forks)`);
    }
    if (opts.timeoutMs !== undefined && opts.timeoutMs > cfg.maxTimeoutMs) throw errors.invalid('timeout', `at most ${cfg.maxTimeoutMs / 1000}s`);
    const parent = this.mgr.get(parentId);
    const t0 = performance.now();
    const snap = await snapshots.create(parentId, { autoRemove: true });
    const results = await Promise.all(
      Array.from({ length: opts.count }, () =>
        this.mgr.createFromSnapshot(snap, { timeoutMs: opts.timeoutMs, labels: parent.labels }).then(
          (sandbox): ForkResult => ({ sandbox }),
          (e: unknown): ForkResult => ({ error: e instanceof CordonError ? e : new CordonError('internal', `fork failed: ${(e as Error).message}`) }),
        ),
      ),
    );
    // Every fork has been restored from the image (or failed): only the layer is needed from now on.
    await snapshots.dropCheckpoint(snap.id).catch(() => {});
    await snapshots.collect().catch(() => {});
    const ok = results.flatMap((r) => (r.sandbox ? [r.sandbox.id] : []));
    const ms = Math.round(performance.now() - t0);
    store.addEvent(parentId, 'fork', `forked into ${ok.length} of ${opts.count} sandboxes in ${ms} ms${ok.length ? `: ${ok.join(', ')}` : ''}`, {
      count: opts.count,
      forks: ok,
      failed: results.filter((r) => r.error).map((r) => r.error!.message),
      duration_ms: ms,
    });
    return results;
  }
}
