import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { dataPaths } from '../config.js';
import { CordonError, errors } from '../errors/registry.js';
import { assertRoomFor, copyLayer, layerBytes, removeLayer } from '../image/layer-copy.js';
import type { Runtime } from '../runtime/types.js';
import type { SnapshotKind, SnapshotRecord, SnapshotStore } from '../store/snapshots.js';
import { newId } from '../util/ids.js';
import type { SandboxManager } from './sandbox-manager.js';
import { assertAllowed } from './state-machine.js';
import type { RootfsSource } from './types.js';

export type { SnapshotRecord } from '../store/snapshots.js';

/** Snapshot names: what E2B accepts for a template alias. */
const NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
/** The namespace E2B puts before a name ("team/name:tag"); cordon has one team. */
export const SNAPSHOT_NAMESPACE = 'cordon';
/** The only tag: a name always points at its newest snapshot. */
export const SNAPSHOT_TAG = 'default';
/** How long a snapshot waits for the sandbox's agent to hang up before the checkpoint (which fails while it is connected). */
const AGENT_QUIESCE_MS = 5_000;

export interface SnapshotOptions {
  name?: string;
  /** A fork's snapshot: not listed, removed with its last user. */
  autoRemove?: boolean;
}

/** Where one snapshot keeps its files. */
export function snapshotDirs(dataDir: string, id: string) {
  const root = join(dataPaths(dataDir).snapshots, id);
  return { root, layer: join(root, 'layer'), checkpoint: join(root, 'checkpoint') };
}

/**
 * Snapshots of running sandboxes. The source keeps running: it is frozen while its writable layer is
 * copied into a new read-only layer (and, where the runtime checkpoints memory, while its memory is
 * written), then thawed. A snapshot's filesystem is its source's lower layers plus that one layer;
 * sandboxes made from it get a fresh writable layer above them. A snapshot is removed only when no
 * sandbox and no other snapshot stands on its layer.
 */
export class Snapshots {
  /** Snapshots an owner outside this class keeps (a template's memory snapshot): never collected. */
  heldBy?: (id: string) => boolean;
  constructor(private readonly mgr: SandboxManager, readonly store: SnapshotStore) {}

  private dirs(id: string) {
    return snapshotDirs(this.mgr.cfg.dataDir, id);
  }

  /** What a runtime can snapshot: memory and files, files only, or nothing (501). */
  kindFor(rt: Runtime): SnapshotKind {
    if (rt.capabilities.checkpoint === 'memory') return 'memory';
    if (rt.capabilities.fsSnapshot) return 'filesystem';
    throw new CordonError('not_implemented', `snapshot: runtime ${rt.name} can neither checkpoint memory nor copy a sandbox's files`, { capability: 'fsSnapshot' });
  }

  async create(sandboxId: string, opts: SnapshotOptions = {}): Promise<SnapshotRecord> {
    if (opts.name !== undefined && !NAME.test(opts.name)) {
      throw errors.invalid('name', 'snapshot names are 1-63 lowercase letters, digits, _ and -, starting with a letter or digit');
    }
    const { cfg, store } = this.mgr;
    const t0 = performance.now();
    const snap = await this.mgr.exclusive(sandboxId, async () => {
      const rec = this.mgr.get(sandboxId);
      assertAllowed(sandboxId, rec.state, 'snapshot');
      // Hooks-mode syncs push first, so the bucket has what the snapshot has; a failure is in the events.
      await this.mgr.s3?.pushHooks(rec, 'snapshot').catch((e: Error) => store.addEvent(sandboxId, 'error', `S3 push before the snapshot failed: ${e.message}`));
      const rt = this.mgr.runtimeFor(rec.runtime);
      const kind = this.kindFor(rt);
      const { lowerDirs, upper } = await this.mgr.rootfs.layers(sandboxId);
      const id = newId(16);
      const dirs = this.dirs(id);
      await mkdir(dirs.root, { recursive: true, mode: 0o700 });
      try {
        // Counted before the freeze, so a snapshot that cannot fit never stops the sandbox at all.
        const bytes = await layerBytes(upper);
        await assertRoomFor(dirs.root, bytes, cfg.snapshotReserveBytes);
        store.update(sandboxId, { state: 'snapshotting' });
        try {
          await this.capture(sandboxId, rt, kind, upper, dirs);
        } finally {
          // capture thawed it, or failed trying (then the exit watch or the next call finds out).
          if (store.get(sandboxId)?.state === 'snapshotting') store.update(sandboxId, { state: 'running' });
        }
        const prev = rec.spec.snapshot ? this.store.get(rec.spec.snapshot) : undefined;
        const s: SnapshotRecord = {
          id,
          name: opts.name,
          sourceSandbox: sandboxId,
          runtime: rec.runtime,
          kind,
          spec: rec.spec,
          lowerDirs: [dirs.layer, ...lowerDirs],
          chain: rec.spec.snapshot ? [rec.spec.snapshot, ...(prev?.chain ?? [])] : [],
          imageConfig: await this.mgr.imageConfig(sandboxId),
          sizeBytes: await layerBytes(dirs.root).catch(() => bytes),
          autoRemove: !!opts.autoRemove,
          agent: this.mgr.boot.startedWithAgent(sandboxId),
          helpers: await this.mgr.boot.helperSetOf(sandboxId),
          createdAt: Date.now(),
        };
        this.store.insert(s);
        return s;
      } catch (e) {
        await removeLayer(dirs.root).catch(() => {});
        throw e;
      }
    });
    const ms = Math.round(performance.now() - t0);
    store.addEvent(sandboxId, 'snapshot', `snapshot ${snap.id}${snap.name ? ` (${snap.name})` : ''} taken (${snap.kind}, ${snap.sizeBytes} bytes) in ${ms} ms`, {
      snapshot_id: snap.id,
      kind: snap.kind,
      duration_ms: ms,
      size_bytes: snap.sizeBytes,
    });
    return snap;
  }

  /**
   * Freeze, copy the writable layer, write the checkpoint (memory snapshots), thaw. The agent hangs up
   * first for a checkpoint (gVisor cannot save its host socket) and is let back in afterwards.
   */
  private async capture(id: string, rt: Runtime, kind: SnapshotKind, upper: string, dirs: ReturnType<Snapshots['dirs']>): Promise<void> {
    const agent = kind === 'memory' ? this.mgr.live.get(id)?.agent : undefined;
    if (agent) await agent.quiesce(AGENT_QUIESCE_MS);
    try {
      await rt.pause(id);
      try {
        // Files first, memory second, both while frozen: the copy and the image show the same moment.
        await copyLayer(upper, dirs.layer);
        if (kind === 'memory') await rt.checkpoint(id, dirs.checkpoint, { leaveRunning: true });
      } finally {
        if ((await rt.status(id).catch(() => 'paused')) === 'paused') await rt.resume(id);
      }
    } finally {
      // The source's processes keep running meanwhile; their streams wait for the agent to come back.
      if (agent) void agent.expectReconnect();
    }
  }

  /**
   * The snapshot a reference names: its id, its name, or E2B's forms "cordon/NAME:default",
   * "NAME:default", "ID:default". 404 when there is none (or for another tag).
   */
  resolve(ref: string): SnapshotRecord {
    const s = this.find(ref);
    if (!s) throw new CordonError('not_found', `snapshot ${ref} does not exist; list snapshots with \`cordon snapshot ls\``, { snapshot: ref });
    return s;
  }

  find(ref: string): SnapshotRecord | undefined {
    let r = ref;
    const colon = r.lastIndexOf(':');
    if (colon >= 0) {
      if (r.slice(colon + 1) !== SNAPSHOT_TAG) return undefined;
      r = r.slice(0, colon);
    }
    if (r.startsWith(`${SNAPSHOT_NAMESPACE}/`)) r = r.slice(SNAPSHOT_NAMESPACE.length + 1);
    if (!r || r.includes('/')) return undefined;
    const s = this.store.get(r) ?? this.store.byName(r);
    // A fork's snapshot is the engine's own business: it goes with its forks.
    return s?.autoRemove ? undefined : s;
  }

  list(filter: { sourceSandbox?: string; name?: string } = {}): SnapshotRecord[] {
    const all = this.store.list({ sourceSandbox: filter.sourceSandbox });
    if (filter.name === undefined) return all;
    const hit = this.find(filter.name);
    return all.filter((s) => s.id === hit?.id);
  }

  /** Sandboxes and snapshots that stand on this snapshot's layer. */
  users(id: string): { sandboxes: string[]; snapshots: string[] } {
    const snapshots = this.store.list({ includeAuto: true }).filter((s) => s.chain.includes(id));
    const bases = new Set([id, ...snapshots.map((s) => s.id)]);
    const sandboxes = this.mgr.store.list().filter((r) => r.spec.snapshot && bases.has(r.spec.snapshot)).map((r) => r.id);
    return { sandboxes, snapshots: snapshots.filter((s) => !s.autoRemove).map((s) => s.id) };
  }

  /** Remove a snapshot no sandbox uses; 409 naming the users otherwise. */
  remove(ref: string): Promise<SnapshotRecord> {
    return this.removeRecord(this.resolve(ref));
  }

  private removeRecord(s: SnapshotRecord): Promise<SnapshotRecord> {
    return this.mgr.exclusive(lockKey(s.id), async () => {
      const { sandboxes, snapshots } = this.users(s.id);
      if (sandboxes.length || snapshots.length) {
        const who = [...sandboxes.map((x) => `sandbox ${x}`), ...snapshots.map((x) => `snapshot ${x}`)];
        throw new CordonError('invalid_state', `snapshot ${s.id} is in use by ${who.join(', ')}; remove those first (their files stand on its layer)`, { snapshot_id: s.id, sandboxes, snapshots });
      }
      this.store.delete(s.id);
      await removeLayer(this.dirs(s.id).root);
      return s;
    });
  }

  /** Remove fork snapshots that nothing uses any more (after a fork, and whenever a sandbox goes). */
  async collect(): Promise<void> {
    for (const s of this.store.list({ includeAuto: true })) {
      if (!s.autoRemove || this.heldBy?.(s.id)) continue;
      const { sandboxes, snapshots } = this.users(s.id);
      if (sandboxes.length || snapshots.length) continue;
      await this.removeRecord(s).catch(() => {});
    }
  }

  /**
   * At start-up, before anything else runs: directories a snapshot interrupted by a crash left
   * behind (no record), and fork snapshots whose forks are all gone.
   */
  async sweep(log: (msg: string) => void): Promise<void> {
    const root = dataPaths(this.mgr.cfg.dataDir).snapshots;
    const entries = await readdir(root).catch(() => [] as string[]);
    for (const name of entries) {
      if (this.store.get(name)) continue;
      await removeLayer(join(root, name)).then(
        () => log(`removed ${name} from the snapshots directory: no snapshot has it (one interrupted by a crash)`),
        (e: Error) => log(`removing ${join(root, name)} failed: ${e.message}`),
      );
    }
    await this.collect().catch(() => {});
  }

  /** Remove an unlisted snapshot whose owner let go of it (a removed template's), once nothing uses it. */
  async release(id: string): Promise<void> {
    const s = this.store.get(id);
    if (s && !this.heldBy?.(id)) await this.removeRecord(s).catch(() => {});
  }

  /** Drop a snapshot's checkpoint image, keeping its layer (a fork's, once every fork is restored). */
  async dropCheckpoint(id: string): Promise<void> {
    await rm(this.dirs(id).checkpoint, { recursive: true, force: true });
  }

  /**
   * Hold the snapshot while a sandbox made from it is recorded (its record makes it a user), so a
   * removal in between cannot take the layer away under it.
   */
  hold<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.mgr.exclusive(lockKey(id), async () => {
      if (!this.store.get(id)) throw new CordonError('not_found', `snapshot ${id} was removed meanwhile`, { snapshot: id });
      return fn();
    });
  }

  /** The filesystem a sandbox made from the snapshot starts with. */
  source(s: SnapshotRecord): RootfsSource {
    return { lowerDirs: s.lowerDirs, config: s.imageConfig, ref: `snapshot ${s.id}` };
  }

  /** The checkpoint image a sandbox made from a memory snapshot is restored from. */
  checkpointDir(s: SnapshotRecord): string | undefined {
    return s.kind === 'memory' ? this.dirs(s.id).checkpoint : undefined;
  }
}

const lockKey = (id: string) => `snapshot:${id}`;
