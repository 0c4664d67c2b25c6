import { rm } from 'node:fs/promises';
import { errors } from '../errors/registry.js';
import { unsynced } from './sandbox-s3.js';
import type { LiveSandbox } from './live-sandbox.js';
import type { SandboxManager } from './sandbox-manager.js';
import { hasContainer } from './state-machine.js';
import type { SandboxRecord } from './types.js';

/** The end of a sandbox: removal (asked for, or at expiry) and a death nobody asked for. */
export class SandboxTeardown {
  constructor(private readonly mgr: SandboxManager) {}

  /**
   * Remove a sandbox. Without force only one without a container (stopped, failed); with force whatever
   * its state. When removal fails midway the record stays, in state error with the reason, and a retry finishes it.
   */
  async remove(id: string, force = false): Promise<void> {
    return this.mgr.exclusive(id, async () => {
      const rec = this.mgr.get(id);
      if (!force && hasContainer(rec.state)) {
        throw errors.wrongState(id, rec.state, 'remove', 'Stop it first, or remove with force (cordon rm -f).');
      }
      // Hooks-mode syncs push first (only a running sandbox, so only a forced removal, has anything to push).
      // Removal is what was asked for: it goes on, and the daemon's log names what could not be pushed.
      const left = await this.mgr.s3?.pushHooks(rec, 'remove').then((r) => unsynced(r), (e: Error) => e.message);
      if (left) this.mgr.warn?.(`sandbox ${id} removed with force although its S3 push did not complete: ${left}`);
      try {
        await this.teardown(id, rec);
      } catch (e) {
        const reason = `removal failed: ${(e as Error).message}; retry with cordon rm -f ${id}`;
        // expiresAt stays: an expired sandbox whose removal failed is retried (expiry, and after a restart).
        throw this.mgr.fail(id, reason, e, `removing sandbox ${id} failed; it stays in state error until a retry succeeds: ${reason}`, true);
      }
      this.mgr.store.delete(id);
      // A fork's snapshot goes with its last fork.
      if (rec.spec.snapshot) void this.mgr.snapshots.collect().catch(() => {});
    });
  }

  /** Undo everything a sandbox holds: processes, container, cgroups, mounts, files. */
  async teardown(id: string, rec?: SandboxRecord): Promise<void> {
    const { rootfs, net } = this.mgr;
    this.mgr.forget(id);
    const runtime = rec?.runtime ?? this.mgr.store.get(id)?.runtime;
    if (runtime) {
      const rt = this.mgr.runtimeFor(runtime);
      if (rec?.state === 'paused') await rt.resume(id).catch(() => {});
      await rt.delete(id, rootfs.dirs(id).bundle);
    }
    await net?.detach(id);
    await this.mgr.storage?.destroy(id);
    await this.mgr.s3?.destroy(id);
    await rootfs.destroy(id);
    // Only when it lives outside the sandbox's directory (a long data directory path).
    await rm(this.mgr.agentSocketDir(id), { recursive: true, force: true });
  }

  /**
   * The sandbox's container ended without the engine asking (OOM, crash). `live` is the handle that
   * watched it: a report about a container the sandbox no longer runs is dropped.
   */
  async markDead(id: string, reason: string, live?: LiveSandbox): Promise<void> {
    await this.mgr.exclusive(id, async () => {
      if (live && this.mgr.live.get(id) !== live) return;
      await this.markDeadLocked(id, reason);
    });
  }

  /** markDead for a caller that already holds the sandbox's lock (through exclusive). */
  async markDeadLocked(id: string, reason: string): Promise<void> {
    const { rootfs, net, store } = this.mgr;
    const rec = store.get(id);
    if (!rec || !hasContainer(rec.state)) return;
    // Recorded first: a client whose command was cut by the death sees why when it looks.
    store.update(id, { state: 'error', stateReason: reason, runtimeState: undefined, expiresAt: undefined });
    store.addEvent(id, 'died', reason);
    this.mgr.forget(id);
    await this.mgr.runtimeFor(rec.runtime).delete(id, rootfs.dirs(id).bundle).catch(() => {});
    await net?.detach(id).catch(() => {});
    await this.mgr.storage?.release(id).catch(() => {});
    await rootfs.unmount(id).catch(() => {});
  }
}
