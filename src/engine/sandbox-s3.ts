import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CordonError, errors } from '../errors/registry.js';
import { s3ClientFor } from '../s3/client.js';
import type { S3CredentialStore } from '../s3/credentials.js';
import { SyncManifest } from '../s3/manifest.js';
import type { S3fsMounts } from '../s3/s3fs-mounts.js';
import { checkSyncSpecs, type S3SyncSpec } from '../s3/sync-spec.js';
import { S3Transfer, type SyncIssue, type SyncReport } from './s3-transfer.js';
import type { LiveSandbox } from './live-sandbox.js';
import type { SandboxManager } from './sandbox-manager.js';
import { checkTarget } from './sandbox-storage.js';
import type { SandboxRecord } from './types.js';

export type SyncDirection = 'pull' | 'push' | 'both';
export type SyncHook = 'create' | 'start' | 'stop' | 'snapshot' | 'remove' | 'call';

/** Issues of each kind kept in an event (the sync call's answer has them all). */
const EVENT_ISSUES = 50;
/** How long a hook waits for the sandbox's agent before using the exec path. */
const AGENT_WAIT_MS = 10_000;

/**
 * A sandbox's S3 syncs: checked at create, pulled at create and start and pushed at stop, snapshot
 * and removal (hooks mode), both on a sync call (hooks and on_demand). Results go back to the caller
 * and, with every conflict, skip and failure, into the sandbox's events.
 */
export class SandboxS3 {
  constructor(
    private readonly mgr: SandboxManager,
    readonly credentials: S3CredentialStore,
    /** Per-sandbox manifests: STATE/<sandbox>/<n>.json. */
    private readonly stateDir: string,
    readonly mounts: S3fsMounts,
  ) {}

  /** Check specs at create: fields, credentials registered, s3fs present for a mount. 4xx, nothing made. */
  async check(specs: Partial<S3SyncSpec>[] | undefined): Promise<S3SyncSpec[]> {
    if (!specs?.length) return [];
    const out = checkSyncSpecs(specs);
    for (const s of out) {
      checkTarget(s.path, 's3_sync.path');
      if (!(await this.credentials.has(s.credentials))) {
        throw new CordonError('invalid_argument', `s3_sync.credentials: ${s.credentials} are not registered; add them with cordon s3 credentials add ${s.credentials}`, { field: 's3_sync.credentials' });
      }
    }
    if (out.some((s) => s.mode === 'mount') && !(await this.mounts.available())) {
      throw new CordonError('not_implemented', 's3_sync: mode=mount needs s3fs on the host (apt-get install s3fs fuse3, or scripts/setup-host.sh)', { field: 's3_sync.mode' });
    }
    return out;
  }

  private manifestFile(id: string, n: number) {
    return join(this.stateDir, id, `${n}.json`);
  }

  private async one(id: string, live: LiveSandbox, n: number, spec: S3SyncSpec, direction: 'pull' | 'push'): Promise<SyncReport> {
    const client = s3ClientFor(spec, await this.credentials.get(spec.credentials));
    try {
      const t = new S3Transfer(spec, client, live.files, await SyncManifest.load(this.manifestFile(id, n)), direction);
      return await (direction === 'pull' ? t.pull() : t.push());
    } catch (e) {
      // The whole direction failed (endpoint unreachable, bucket missing, directory not one): one failure for its root.
      const reason = e instanceof CordonError ? e.message : `${(e as Error).name}: ${(e as Error).message}`;
      return { direction, bucket: spec.bucket, prefix: spec.prefix, path: spec.path, files: 0, bytes: 0, deleted: 0, unchanged: 0, skipped: [], conflicts: [], failed: [{ path: spec.path, reason }], complete: false, durationMs: 0 };
    } finally {
      client.destroy();
    }
  }

  private record(id: string, hook: SyncHook, r: SyncReport): void {
    const cut = (l: SyncIssue[]) => l.slice(0, EVENT_ISSUES);
    const where = `${r.path} ${r.direction === 'pull' ? '<-' : '->'} s3://${r.bucket}/${r.prefix}`;
    const issues = [r.conflicts.length && `${r.conflicts.length} conflicts`, r.failed.length && `${r.failed.length} failed`, r.skipped.length && `${r.skipped.length} skipped`].filter(Boolean).join(', ');
    this.mgr.store.addEvent(id, 's3_sync', `${r.direction} (${hook}) ${where}: ${r.files} files, ${r.bytes} bytes, ${r.deleted} deleted${issues ? `; ${issues}` : ''}`, {
      hook, direction: r.direction, bucket: r.bucket, prefix: r.prefix, path: r.path, files: r.files, bytes: r.bytes, deleted: r.deleted, unchanged: r.unchanged,
      complete: r.complete, conflicts: cut(r.conflicts), failed: cut(r.failed), skipped: cut(r.skipped),
      conflicts_total: r.conflicts.length, failed_total: r.failed.length, skipped_total: r.skipped.length,
    });
  }

  /** Run the sandbox's syncs of the given modes in a direction ('both': pull, then push). Caller holds its lock. */
  private async run(rec: SandboxRecord, modes: S3SyncSpec['mode'][], direction: SyncDirection, hook: SyncHook): Promise<SyncReport[]> {
    const specs = (rec.spec.s3Sync ?? []).map((s, n) => ({ s, n })).filter(({ s }) => modes.includes(s.mode));
    if (!specs.length) return [];
    const live = this.mgr.live.get(rec.id);
    if (!live) throw errors.wrongState(rec.id, rec.state, 'sync', 'It must be running for its files to be synced; start it first.');
    await live.waitForAgent(AGENT_WAIT_MS);
    const out: SyncReport[] = [];
    for (const { s, n } of specs) {
      for (const d of direction === 'both' ? (['pull', 'push'] as const) : [direction]) {
        const r = await this.one(rec.id, live, n, s, d);
        this.record(rec.id, hook, r);
        out.push(r);
      }
    }
    return out;
  }

  /** Hooks mode at create and start: pull. */
  pullHooks(rec: SandboxRecord, hook: 'create' | 'start'): Promise<SyncReport[]> {
    return this.run(rec, ['hooks'], 'pull', hook);
  }

  /** Hooks mode at stop, snapshot and removal: push (only while the sandbox runs: its files are read through it). */
  async pushHooks(rec: SandboxRecord, hook: 'stop' | 'snapshot' | 'remove'): Promise<SyncReport[]> {
    if (rec.state !== 'running' || !this.mgr.live.get(rec.id)) {
      // Not lost: the files stay in the sandbox and the next push (after a start) sends what changed.
      if (rec.spec.s3Sync?.some((s) => s.mode === 'hooks') && rec.state === 'paused') {
        this.mgr.store.addEvent(rec.id, 's3_sync', `push (${hook}) skipped: the sandbox is paused, so its files cannot be read; they stay for the next push`, { hook, direction: 'push', complete: false });
      }
      return [];
    }
    return this.run(rec, ['hooks'], 'push', hook);
  }

  /** The sync call: hooks and on_demand syncs, one or both directions; under the sandbox's lock. */
  sync(id: string, direction: SyncDirection): Promise<SyncReport[]> {
    return this.mgr.exclusive(id, async () => {
      const rec = this.mgr.get(id);
      if (!rec.spec.s3Sync?.length) throw errors.invalid('sandbox', `sandbox ${id} has no S3 sync; create it with --s3-sync`);
      if (rec.state !== 'running') throw errors.wrongState(id, rec.state, 'sync', 'Its files are synced through it while it runs; start (or resume) it first.');
      return this.run(rec, ['hooks', 'on_demand'], direction, 'call');
    });
  }

  /** Forget a removed sandbox's manifests. */
  async destroy(id: string): Promise<void> {
    await rm(join(this.stateDir, id), { recursive: true, force: true });
  }
}

/** Failures (and, unless left out, conflicts) of a set of reports, for a message; undefined when none. */
export function unsynced(reports: SyncReport[], withConflicts = true): string | undefined {
  const bad = reports.filter((r) => r.failed.length || (withConflicts && r.conflicts.length));
  if (!bad.length) return undefined;
  return bad.map((r) => `${r.path} -> s3://${r.bucket}/${r.prefix}: ${r.failed.length} failed, ${r.conflicts.length} conflicts${r.failed[0] ? ` (${r.failed[0].path}: ${r.failed[0].reason})` : ''}`).join('; ');
}
