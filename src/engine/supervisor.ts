import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { dataPaths } from '../config.js';
import { listCgroupIds, removeCgroups } from '../runtime/cgroup/index.js';
import { killShim, listShims } from '../runtime/shim.js';
import type { ContainerExit } from '../runtime/types.js';
import { sleep } from '../util/proc.js';
import type { LiveSandbox } from './live-sandbox.js';
import type { SandboxManager } from './sandbox-manager.js';
import { hasContainer, isTransition } from './state-machine.js';
import type { SandboxRecord } from './types.js';

/** Sandboxes reconciled at once at start-up: one wedged runtime call holds up only its own. */
const RECONCILE_PARALLEL = 4;

/** Run `fn` over `items`, at most `n` at a time. */
async function eachLimited<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}

/** Backoff of a failed attempt to record a death (lock busy, store closed). */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 60_000;

/**
 * Keeps records and reality in agreement: at start-up after a restart or crash, and then by acting on
 * the exit of a running sandbox's container that nobody asked for (OOM, crash): it is marked and
 * cleaned up. Its runtime reports the exit (Runtime.wait); nothing here looks at host processes.
 */
export class Supervisor {
  private stopped = false;
  constructor(private readonly mgr: SandboxManager, private readonly log: (msg: string) => void) {
    // From the start: a sandbox re-attached during reconcile may die before reconcile is done.
    mgr.onExit = (id, exit, live) => void this.exited(id, exit, live);
  }

  /**
   * Bring every record in line with what the runtimes still run, a few sandboxes at a time. Each one
   * is handled under its lock and on its own: a runtime call that hits its deadline fails that sandbox
   * (state error, with the reason) and the others go on.
   */
  async reconcile(): Promise<void> {
    const known = new Set<string>();
    await eachLimited(this.mgr.store.list(), RECONCILE_PARALLEL, async (rec) => {
      known.add(rec.id);
      try {
        const outcome = await this.mgr.exclusive(rec.id, () => this.reconcileOne(rec));
        if (outcome === 'removed') known.delete(rec.id);
        if (outcome === 'expired') await this.removeExpired(rec);
      } catch (e) {
        const reason = `the daemon could not check this sandbox after its restart: ${(e as Error).message}; remove it with cordon rm -f ${rec.id}, or start it again`;
        this.log(`sandbox ${rec.id}: ${reason}`);
        if (!this.mgr.store.get(rec.id)) return;
        this.mgr.store.update(rec.id, { state: 'error', stateReason: reason, runtimeState: undefined });
        this.mgr.store.addEvent(rec.id, 'error', reason);
      }
    });
    await this.restoreNetwork();
    await this.removeOrphans(known);
    await this.mgr.snapshots.sweep(this.log);
  }

  /** An expiry that passed while the daemon was down; a failed removal is retried like any expiry. */
  private async removeExpired(rec: SandboxRecord): Promise<void> {
    try {
      await this.mgr.remove(rec.id, true);
    } catch (e) {
      this.log(`removing expired sandbox ${rec.id} failed: ${(e as Error).message}; retrying`);
      this.mgr.schedule(rec.id, rec.expiresAt);
    }
  }

  /** Reconcile one record, holding its lock. */
  private async reconcileOne(rec: SandboxRecord): Promise<'kept' | 'removed' | 'expired'> {
    const { store, rootfs } = this.mgr;
    const rt = this.mgr.runtimeFor(rec.runtime);
    if (rec.state === 'creating') {
      // A create that never finished: nothing of it may stay behind (its shim included).
      await rt.delete(rec.id, rootfs.dirs(rec.id).bundle).catch(() => {});
      await this.mgr.storage?.destroy(rec.id).catch(() => {});
      await rootfs.destroy(rec.id).catch(() => {});
      store.delete(rec.id);
      this.log(`removed half-created sandbox ${rec.id}`);
      return 'removed';
    }
    if (await this.settlePausedToDisk(rec)) return 'kept';
    if (hasContainer(rec.state)) {
      const status = await rt.adopt(rec.id, rec.runtimeState);
      if (status === 'running' || status === 'paused') {
        if (rec.expiresAt && rec.expiresAt <= Date.now()) return 'expired';
        this.mgr.attach(rec.id, rt, await this.mgr.imageConfig(rec.id), rec.runtimeState);
        await this.mgr.storage?.adopt(rec.id).catch((e: Error) => this.log(`sandbox ${rec.id}: reconnecting its file gates failed: ${e.message}`));
        this.mgr.schedule(rec.id, rec.expiresAt);
        if (status !== rec.state) store.update(rec.id, { state: status });
        // A checkpoint transition the daemon was in the middle of: the container is what counts.
        if (isTransition(rec.state)) store.addEvent(rec.id, 'error', `the daemon stopped while the sandbox was ${rec.state}; that was abandoned and the sandbox is ${status}`);
        return 'kept';
      }
      const reason = isTransition(rec.state)
        ? `the daemon stopped while the sandbox was ${rec.state} and its container is gone; start it again or remove it`
        : 'the sandbox exited while the daemon was not running';
      await this.mgr.markDeadLocked(rec.id, reason);
      return 'kept';
    }
    // stopped / error: the container must not exist and the overlay must not stay mounted.
    await rt.delete(rec.id, rootfs.dirs(rec.id).bundle).catch(() => {});
    await this.mgr.storage?.release(rec.id).catch(() => {});
    await rootfs.unmount(rec.id).catch(() => {});
    // A removal that failed for an expired sandbox is tried again.
    if (rec.state === 'error' && rec.expiresAt) this.mgr.schedule(rec.id, rec.expiresAt);
    return 'kept';
  }

  /**
   * A sandbox paused to disk has no container to adopt: it stays paused (nothing of it runs, its
   * overlay is mounted again at resume). A pause or a resume the daemon stopped in the middle of is
   * settled by what is on disk: with no container left and a complete image, the sandbox is paused.
   */
  private async settlePausedToDisk(rec: SandboxRecord): Promise<boolean> {
    const { store, rootfs, pauses } = this.mgr;
    const paused = rec.state === 'paused' && (await pauses.onDisk(rec.id));
    const midway = (rec.state === 'pausing' || rec.state === 'restoring') && existsSync(pauses.imageDir(rec.id));
    if (!paused && !midway) return false;
    const rt = this.mgr.runtimeFor(rec.runtime);
    if (midway && (await rt.adopt(rec.id, rec.runtimeState)) !== 'missing') return false;
    // A pause to disk answers before its container has ended: the daemon may have stopped in between.
    await rt.delete(rec.id, rootfs.dirs(rec.id).bundle).catch(() => {});
    await this.mgr.storage?.release(rec.id).catch(() => {});
    await rootfs.unmount(rec.id).catch(() => {});
    if (midway) {
      if (!(await pauses.record(rec.id))) await pauses.keep(rec.id, rec.expiresAt);
      store.update(rec.id, { state: 'paused', runtimeState: undefined, expiresAt: undefined });
      store.addEvent(rec.id, 'error', `the daemon stopped while the sandbox was ${rec.state}; its checkpoint image is complete, so it is paused (resume it)`);
    }
    return true;
  }

  /**
   * Networked sandboxes that kept running get their links, policy (from the stored spec), resolver,
   * listeners and port forwards back; links, namespaces and state of every other sandbox are removed.
   */
  private async restoreNetwork(): Promise<void> {
    const net = this.mgr.net;
    if (!net) return;
    const running = this.mgr.store.list()
      .filter((r) => hasContainer(r.state) && this.mgr.live.has(r.id))
      .map((r) => ({ id: r.id, network: r.spec.network, relink: this.mgr.runtimeFor(r.runtime).capabilities.networkLink === 'live' }));
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

  /** Shims, containers, mounts and cgroups with no record come from a crash mid-create or mid-remove. */
  private async removeOrphans(known: Set<string>): Promise<void> {
    const sandboxesDir = dataPaths(this.mgr.cfg.dataDir).sandboxes;
    for (const shim of await listShims(sandboxesDir)) {
      if (known.has(shim.id)) continue;
      await killShim(shim.pid);
      this.log(`stopped orphan shim ${shim.pid} of sandbox ${shim.id}`);
    }
    for (const rt of this.mgr.runtimes.values()) {
      for (const id of await rt.list().catch(() => [] as string[])) {
        if (!known.has(id)) {
          await rt.delete(id, this.mgr.rootfs.dirs(id).bundle).catch(() => {});
          this.log(`removed orphan ${rt.name} container ${id}`);
        }
      }
    }
    const dirs = await readdir(sandboxesDir).catch(() => [] as string[]);
    for (const id of dirs) {
      if (!known.has(id)) {
        await this.mgr.storage?.destroy(id).catch(() => {});
        await this.mgr.rootfs.destroy(id).catch(() => {});
        this.log(`removed orphan sandbox files ${id}`);
      }
    }
    for (const id of (await this.mgr.storage?.ids()) ?? []) {
      if (!known.has(id)) await this.mgr.storage!.destroy(id).catch((e: Error) => this.log(`removing orphan host mounts of ${id} failed: ${e.message}`));
    }
    for (const id of await listCgroupIds()) if (!known.has(id)) await removeCgroups(id);
  }

  /** A running sandbox's container ended and the engine had not asked for it. */
  private async exited(id: string, exit: ContainerExit, live: LiveSandbox): Promise<void> {
    const rec = this.mgr.store.get(id);
    if (!rec || !hasContainer(rec.state) || this.mgr.live.get(id) !== live) return;
    const reason = exit.oomKilled
      ? `out of memory: the sandbox exceeded its ${rec.spec.memoryBytes}-byte limit and was killed`
      : 'the sandbox init process exited';
    this.log(`sandbox ${id} died: ${reason}`);
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        await this.mgr.markDead(id, reason, live);
        return;
      } catch (e) {
        const delay = Math.min(RETRY_FIRST_MS * 2 ** attempt, RETRY_MAX_MS);
        this.log(`marking sandbox ${id} dead failed: ${(e as Error).message}; retrying in ${delay / 1000}s`);
        await sleep(delay);
      }
    }
  }

  stop(): void {
    this.stopped = true;
    this.mgr.onExit = undefined;
  }
}
