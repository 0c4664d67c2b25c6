import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RuntimeName } from '../config.js';
import { CordonError, errors } from '../errors/registry.js';
import { networkEnv } from '../net/sandbox-files.js';
import { newId } from '../util/ids.js';
import { composeCommand } from './exec-env.js';
import { startAndWaitReady } from './templates/start-ready.js';
import type { SandboxManager } from './sandbox-manager.js';
import type { SandboxRecord, SandboxSpec, TmpfsMount } from './types.js';
import type { HostMount } from '../volume/host-mounts.js';
import { checkDistinctTargets, checkTarget } from './sandbox-storage.js';
import { checkRulePath, planGates } from '../volume/file-rules.js';
import type { VolumeMount } from './volumes.js';
import { specFromSnapshot } from './snapshot-spec.js';
import type { SnapshotRecord } from '../store/snapshots.js';
import type { S3SyncSpec } from '../s3/sync-spec.js';
import { unsynced } from './sandbox-s3.js';

export interface CreateInput extends Omit<SandboxSpec, 'runtime' | 'memoryBytes' | 'pids' | 'timeoutMs' | 'env' | 'tmpfs' | 'readOnlyRootfs' | 'volumes' | 's3Sync'> {
  /** S3 syncs as given (checked and defaulted at create). */
  s3Sync?: Partial<S3SyncSpec>[];
  /** Named volumes by name or id. */
  volumes?: { name: string; path: string; readOnly?: boolean }[];
  runtime?: RuntimeName;
  memoryBytes?: number;
  pids?: number;
  timeoutMs?: number;
  env?: Record<string, string>;
  tmpfs?: SandboxSpec['tmpfs'];
  readOnlyRootfs?: boolean;
  labels?: Record<string, string>;
  entrypoint?: string[];
  /** Make it from this snapshot (a reference: id or name, in E2B's forms too) instead of a template or image. */
  snapshot?: string;
}

/**
 * Faster ways to a sandbox of a built template (src/engine/templates): a started one from its warm
 * pool, or a restore of the memory snapshot taken with its service up. Either may decline, saying why.
 */
export interface TemplateFastPaths {
  /** Whether this create is a pool's own (it never claims, and makes no room by evicting). */
  isPoolMember(input: CreateInput): boolean;
  /** A pool member handed to this request, or why none was (undefined: the template keeps no pool). */
  claim(input: CreateInput, runtime: RuntimeName): Promise<{ rec: SandboxRecord } | { miss?: string }>;
  /** The template's memory snapshot when a restore can serve this request, else why not (undefined: it has none). */
  snapshotFor(input: CreateInput, runtime: RuntimeName): { snap: SnapshotRecord } | { why?: string };
  /** Remove one idle pool member to make room for a user's create at the sandbox cap; false when none. */
  evictIdle(): Promise<boolean>;
  /** Per template with a pool: members ready and starting, claims and misses since the daemon started (for metrics). */
  poolStats(): { template: string; ready: number; starting: number; claims: number; misses: number }[];
}

/** Creating a sandbox: validate, pass admission, prepare its rootfs, boot it; undo it all on failure. */
export class SandboxCreation {
  constructor(private readonly mgr: SandboxManager) {}

  async create(input: CreateInput, progress?: (line: string) => void): Promise<SandboxRecord> {
    const { cfg } = this.mgr;
    const fast = this.mgr.templateFast;
    // A pool never starves users: at the cap, an idle pool member gives its place to this create.
    if (fast && !fast.isPoolMember(input) && this.mgr.countActive() >= cfg.maxSandboxes) await fast.evictIdle();
    if (input.snapshot !== undefined) return this.fromSnapshot(this.mgr.snapshots.resolve(input.snapshot), input);
    const runtime = input.runtime ?? cfg.defaultRuntime;
    this.mgr.runtimeFor(runtime);
    const timeoutMs = input.timeoutMs ?? cfg.defaultTimeoutMs;
    if (timeoutMs > cfg.maxTimeoutMs) throw errors.invalid('timeout', `at most ${cfg.maxTimeoutMs / 1000}s`);
    if (input.network && input.network.mode !== 'none') {
      if (!this.mgr.net) throw errors.invalid('network', 'this daemon has no network capability');
      this.mgr.net.validate(input.network);
    }
    const notes: [string, string][] = [];
    if (fast && !input.image && input.template && input.template !== 'base') {
      const c = await fast.claim(input, runtime);
      if ('rec' in c) return c.rec;
      if (c.miss) notes.push(['pool-miss', `the warm pool of template ${input.template} could not serve this create (${c.miss}); created cold`]);
      const s = fast.snapshotFor(input, runtime);
      if ('snap' in s) {
        const { template, runtime: _rt, ...rest } = input;
        const rec = await this.fromSnapshot(s.snap, rest, template);
        for (const [type, msg] of notes) this.mgr.store.addEvent(rec.id, type, msg);
        return rec;
      }
      if (s.why) notes.push(['template-cold', `the memory snapshot of template ${input.template} cannot serve this create (${s.why}); booted its files and ran the start command instead`]);
    }
    const storage = await this.storage(input);
    const release = await this.mgr.admission.enter();
    try {
      const rec = await this.createAdmitted({ ...input, ...storage }, runtime, timeoutMs, progress);
      for (const [type, msg] of notes) this.mgr.store.addEvent(rec.id, type, msg);
      return rec;
    } finally {
      release();
    }
  }

  /** Volumes and host mounts checked before anything is made: 4xx naming the field, nothing created. */
  private async storage(input: CreateInput): Promise<{ volumeMounts: VolumeMount[]; mounts: HostMount[]; tmpfs: TmpfsMount[]; s3Sync: S3SyncSpec[] }> {
    const tmpfs = (input.tmpfs ?? []).map((t) => ({ ...t, path: checkTarget(t.path, 'tmpfs') }));
    const wanted = (input.volumes ?? []).map((v) => ({ ...v, path: checkTarget(v.path, 'volumes') }));
    const mounts = (input.mounts ?? []).map((m) => ({ ...m, target: checkTarget(m.target, 'mounts') }));
    const { storage } = this.mgr;
    if ((wanted.length || mounts.length) && !storage) throw errors.invalid('volumes', 'this daemon has no storage capability');
    const volumeMounts = wanted.length ? storage!.volumes.resolveMounts(wanted) : [];
    for (const m of mounts) await storage!.hostMounts.check(m);
    if (input.s3Sync?.length && !this.mgr.s3) throw errors.invalid('s3_sync', 'this daemon has no S3 support');
    const s3Sync = (await this.mgr.s3?.check(input.s3Sync)) ?? [];
    checkDistinctTargets(volumeMounts, mounts, tmpfs, s3Sync.filter((s) => s.mode === 'mount').map((s) => s.path));
    if (input.fileRules?.length || input.fileEvents?.length) {
      if (!storage?.gates.available) throw errors.invalid('file_rules', 'this daemon has no file gate (cordon-fsgate was not built); install golang-github-hanwen-go-fuse-dev and fuse3 (scripts/setup-host.sh) and rebuild');
      for (const r of input.fileRules ?? []) checkRulePath(r.path, 'file_rules');
      for (const e of input.fileEvents ?? []) checkRulePath(e, 'file_events');
      planGates([...volumeMounts.map((v) => v.path), ...mounts.map((m) => m.target)], input.fileRules ?? [], input.fileEvents ?? []);
    }
    return { volumeMounts, mounts, tmpfs, s3Sync };
  }

  private async createAdmitted(input: Omit<CreateInput, 's3Sync'> & { volumeMounts: VolumeMount[]; s3Sync: S3SyncSpec[] }, runtime: RuntimeName, timeoutMs: number, progress?: (line: string) => void): Promise<SandboxRecord> {
    const { cfg, store, rootfs } = this.mgr;
    const id = newId();
    const spec: SandboxSpec = {
      template: input.image ? undefined : (input.template ?? 'base'),
      image: input.image,
      pullPolicy: input.image ? input.pullPolicy : undefined,
      runtime,
      env: { ...(input.env ?? {}), ...networkEnv(input.network) },
      workdir: input.workdir,
      cmd: input.cmd,
      user: input.user,
      cpus: input.cpus,
      memoryBytes: input.memoryBytes ?? cfg.defaultMemoryBytes,
      pids: input.pids ?? cfg.defaultPids,
      diskBytes: input.diskBytes,
      timeoutMs,
      readOnlyRootfs: input.readOnlyRootfs ?? false,
      tmpfs: input.tmpfs ?? [],
      ...(input.volumeMounts.length ? { volumes: input.volumeMounts } : {}),
      ...(input.mounts?.length ? { mounts: input.mounts } : {}),
      ...(input.fileRules?.length ? { fileRules: input.fileRules } : {}),
      ...(input.fileEvents?.length ? { fileEvents: input.fileEvents } : {}),
      ...(input.s3Sync.length ? { s3Sync: input.s3Sync } : {}),
      hostname: input.hostname ?? id.slice(0, 12),
      noNewPrivileges: input.noNewPrivileges ?? false,
      network: input.network,
      ...(input.onTimeout && input.onTimeout !== 'kill' ? { onTimeout: input.onTimeout } : {}),
      ...(input.idlePause === false ? { idlePause: false } : {}),
    };
    const now = Date.now();
    const rec: SandboxRecord = { id, state: 'creating', runtime, spec, labels: input.labels ?? {}, createdAt: now, updatedAt: now };
    this.mgr.admission.admitCount(this.mgr.countActive());
    store.insert(rec);
    return this.mgr.exclusive(id, async () => {
      try {
        const source = await this.mgr.sources.resolve({ template: spec.template, image: spec.image, pullPolicy: spec.pullPolicy }, progress);
        await rootfs.prepare(id, source, spec.diskBytes).catch((e: Error) => {
          throw e instanceof RangeError ? errors.invalid('disk', e.message) : e;
        });
        await writeFile(join(rootfs.dirs(id).root, 'image-config.json'), JSON.stringify(source.config));
        await this.mgr.boot.boot(rec, source.config);
        // Hooks-mode syncs pull before anything runs; a pull with failures fails the create (loudly, not half-filled); conflicts with the image's files are in the events.
        const pulled = (await this.mgr.s3?.pullHooks(this.mgr.get(id), 'create')) ?? [];
        const left = unsynced(pulled, false);
        if (left) throw new CordonError('unavailable', `the S3 pull at create did not complete: ${left}`, { field: 's3_sync' });
        // Docker's rule: cmd replaces the image's Cmd, entrypoint (even []) replaces its Entrypoint.
        const main = composeCommand(source.config, input.entrypoint, spec.cmd);
        if (main.length) await this.mgr.live.get(id)!.startMain(main);
        // A template's service is up (its ready command passed) when create returns.
        if (source.start) await startAndWaitReady(this.mgr.live.get(id)!, source.start);
        store.addEvent(id, 'created', `sandbox created from ${source.ref} on ${runtime}`);
        return this.mgr.get(id);
      } catch (e) {
        throw await this.rollBack(id, e);
      }
    });
  }

  /**
   * A new sandbox from a snapshot: the snapshot's layers below a fresh writable layer; with a memory
   * snapshot its processes and memory restored from the checkpoint image, else a fresh boot of its files.
   */
  async fromSnapshot(snap: SnapshotRecord, input: CreateInput, template?: string): Promise<SandboxRecord> {
    const { cfg } = this.mgr;
    const timeoutMs = input.timeoutMs ?? cfg.defaultTimeoutMs;
    if (timeoutMs > cfg.maxTimeoutMs) throw errors.invalid('timeout', `at most ${cfg.maxTimeoutMs / 1000}s`);
    // A template's snapshot: the sandbox is the template's (its users, its name in views), not the build's.
    const spec = { ...specFromSnapshot(snap, input, timeoutMs), ...(template ? { template } : {}) };
    const rt = this.mgr.runtimeFor(snap.runtime);
    if (spec.network && spec.network.mode !== 'none') {
      if (!this.mgr.net) throw errors.invalid('network', 'this daemon has no network capability');
      this.mgr.net.validate(spec.network);
    }
    const release = await this.mgr.admission.enter();
    try {
      const id = newId();
      const now = Date.now();
      const rec: SandboxRecord = { id, state: 'creating', runtime: snap.runtime, spec, labels: input.labels ?? {}, createdAt: now, updatedAt: now };
      // Recorded under the snapshot's hold: from here on the sandbox counts as its user. Counted and
      // recorded in one step, so forks created side by side cannot all pass the cap.
      await this.mgr.snapshots.hold(snap.id, async () => {
        this.mgr.admission.admitCount(this.mgr.countActive());
        this.mgr.store.insert(rec);
      });
      return await this.mgr.exclusive(id, async () => {
        try {
          const { rootfs, store } = this.mgr;
          await rootfs.prepare(id, this.mgr.snapshots.source(snap), spec.diskBytes);
          await writeFile(join(rootfs.dirs(id).root, 'image-config.json'), JSON.stringify(snap.imageConfig));
          const checkpoint = this.mgr.snapshots.checkpointDir(snap);
          if (checkpoint && rt.capabilities.checkpoint === 'memory') {
            const t0 = performance.now();
            store.update(id, { state: 'restoring' });
            await this.mgr.boot.restore(rec, snap.imageConfig, checkpoint, {
              startedAt: Date.now(),
              expiresAt: timeoutMs > 0 ? Date.now() + timeoutMs : undefined,
              withAgent: snap.agent,
              helpers: snap.helpers,
            });
            const ms = Math.round(performance.now() - t0);
            store.addEvent(id, 'restore', `memory and processes restored from snapshot ${snap.id} in ${ms} ms`, { snapshot_id: snap.id, duration_ms: ms });
          } else {
            // Files only: a fresh boot, and the main command starts again as it did in the source.
            await this.mgr.boot.boot(rec, snap.imageConfig);
            const main = composeCommand(snap.imageConfig, undefined, spec.cmd);
            if (main.length) await this.mgr.live.get(id)!.startMain(main);
          }
          store.addEvent(id, 'created', template ? `sandbox created from template ${template} (its ${snap.kind} snapshot ${snap.id}) on ${snap.runtime}` : `sandbox created from snapshot ${snap.id} (${snap.kind}) on ${snap.runtime}`);
          return this.mgr.get(id);
        } catch (e) {
          throw await this.rollBack(id, e);
        }
      });
    } finally {
      release();
    }
  }

  /**
   * Undo a create that failed: nothing of it stays behind. When undoing fails too (a wedged runtime),
   * the record stays in state error saying so, and `rm -f` finishes the job later.
   */
  private async rollBack(id: string, e: unknown): Promise<CordonError> {
    const msg = (e as Error).message;
    try {
      await this.mgr.teardown.teardown(id);
    } catch (te) {
      const reason = `create failed: ${msg}; cleaning up failed too: ${(te as Error).message}; remove it with cordon rm -f ${id}`;
      return this.mgr.fail(id, reason, e, `creating sandbox ${id} failed and it stays in state error: ${reason}`);
    }
    this.mgr.store.delete(id);
    if (e instanceof CordonError && e.code !== 'deadline_exceeded') return e;
    return new CordonError(e instanceof CordonError ? e.code : 'internal', `creating the sandbox failed and was rolled back: ${msg}`);
  }
}
