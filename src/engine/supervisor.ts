import { readdir } from 'node:fs/promises';
import { dataPaths } from '../config.js';
import { listCgroupIds, removeCgroups } from '../runtime/cgroup/index.js';
import { pidAlive } from '../util/proc.js';
import type { SandboxManager } from './sandbox-manager.js';

/**
 * Keeps records and reality in agreement: at start-up after a restart or crash, and then by watching
 * each running sandbox's init process so one that dies (OOM, crash) is marked and cleaned up.
 */
export class Supervisor {
  private timer?: NodeJS.Timeout;
  constructor(private readonly mgr: SandboxManager, private readonly log: (msg: string) => void) {}

  async reconcile(): Promise<void> {
    const { store, rootfs } = this.mgr;
    const known = new Set<string>();
    for (const rec of store.list()) {
      known.add(rec.id);
      const rt = this.mgr.runtimeFor(rec.runtime);
      if (rec.state === 'creating') {
        // A create that never finished: nothing of it may stay behind.
        await rt.delete(rec.id, rootfs.dirs(rec.id).bundle).catch(() => {});
        await rootfs.destroy(rec.id).catch(() => {});
        store.delete(rec.id);
        known.delete(rec.id);
        this.log(`removed half-created sandbox ${rec.id}`);
        continue;
      }
      if (rec.state === 'running' || rec.state === 'paused') {
        const status = await rt.status(rec.id);
        if ((status === 'running' || status === 'paused') && rec.initPid && pidAlive(rec.initPid)) {
          if (rec.expiresAt && rec.expiresAt <= Date.now()) {
            await this.mgr.remove(rec.id, true).catch(() => {});
            continue;
          }
          this.mgr.attach(rec.id, rt, await this.mgr.imageConfig(rec.id), rec.initPid);
          this.mgr.schedule(rec.id, rec.expiresAt);
          if (status !== rec.state) store.update(rec.id, { state: status });
          continue;
        }
        await this.mgr.markDead(rec.id, 'the sandbox exited while the daemon was not running');
        continue;
      }
      // stopped / error: the container must not exist and the overlay must not stay mounted.
      await rt.delete(rec.id, rootfs.dirs(rec.id).bundle).catch(() => {});
      await rootfs.unmount(rec.id).catch(() => {});
    }
    await this.restoreNetwork();
    await this.removeOrphans(known);
  }

  /**
   * Networked sandboxes that kept running get their links, policy (from the stored spec), resolver,
   * listeners and port forwards back; links, namespaces and state of every other sandbox are removed.
   */
  private async restoreNetwork(): Promise<void> {
    const net = this.mgr.net;
    if (!net) return;
    const running = this.mgr.store.list()
      .filter((r) => (r.state === 'running' || r.state === 'paused') && this.mgr.live.has(r.id))
      .map((r) => ({ id: r.id, runtime: r.runtime, network: r.spec.network }));
    try {
      for (const id of await net.restore(running, this.log)) {
        const msg = 'its network link did not survive the daemon restart; it has no network until it is stopped and started again';
        this.log(`sandbox ${id}: ${msg}`);
        this.mgr.store.addEvent(id, 'network', msg);
      }
    } catch (e) {
      // Fail closed: the sandboxes keep running, their connections find no listener.
      this.log(`restoring sandbox networking failed: ${(e as Error).message}`);
    }
  }

  /** Containers, mounts and cgroups with no record come from a crash mid-create or mid-remove. */
  private async removeOrphans(known: Set<string>): Promise<void> {
    for (const rt of this.mgr.runtimes.values()) {
      for (const id of await rt.list().catch(() => [] as string[])) {
        if (!known.has(id)) {
          await rt.delete(id, this.mgr.rootfs.dirs(id).bundle).catch(() => {});
          this.log(`removed orphan ${rt.name} container ${id}`);
        }
      }
    }
    const dirs = await readdir(dataPaths(this.mgr.cfg.dataDir).sandboxes).catch(() => [] as string[]);
    for (const id of dirs) {
      if (!known.has(id)) {
        await this.mgr.rootfs.destroy(id).catch(() => {});
        this.log(`removed orphan sandbox files ${id}`);
      }
    }
    for (const id of await listCgroupIds()) if (!known.has(id)) await removeCgroups(id);
  }

  watch(intervalMs = 1000): void {
    this.timer = setInterval(() => void this.check(), intervalMs);
    this.timer.unref();
  }

  private async check(): Promise<void> {
    for (const [id, live] of this.mgr.live) {
      if (pidAlive(live.initPid)) continue;
      const rec = this.mgr.store.get(id);
      if (!rec || (rec.state !== 'running' && rec.state !== 'paused')) continue;
      const stats = await this.mgr.runtimeFor(rec.runtime).stats(id).catch(() => undefined);
      const reason = stats && stats.oomKills > 0
        ? `out of memory: the sandbox exceeded its ${rec.spec.memoryBytes}-byte limit and was killed`
        : 'the sandbox init process exited';
      this.log(`sandbox ${id} died: ${reason}`);
      await this.mgr.markDead(id, reason);
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
