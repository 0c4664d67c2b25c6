import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { createHash, type Hash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { posix } from 'node:path';
import { CordonError } from '../errors/registry.js';
import type { ManifestEntry, SyncManifest } from '../s3/manifest.js';
import type { S3SyncSpec } from '../s3/sync-spec.js';
import type { FileEntry } from './files.js';
import type { SandboxFiles } from './sandbox-files.js';

// One direction of one sync between a bucket prefix and a directory inside a sandbox. Files cross
// only through the sandbox's file path (its agent, or the exec helpers): the host never opens a
// path the sandbox controls. Symlinks, FIFOs, sockets and devices are skipped and reported, never
// opened; files past the spec's size bound are skipped and reported; every stream has a byte bound
// and an idle deadline, so a sandbox cannot make the daemon read without end or wait forever.

export interface SyncIssue {
  path: string;
  reason: string;
}

export interface SyncReport {
  direction: 'pull' | 'push';
  bucket: string;
  prefix: string;
  path: string;
  /** Files transferred and their bytes. */
  files: number;
  bytes: number;
  /** Files deleted on the receiving side because the sender deleted them since the last sync. */
  deleted: number;
  unchanged: number;
  skipped: SyncIssue[];
  conflicts: SyncIssue[];
  failed: SyncIssue[];
  /** Whether every file was handled (no failure, no conflict). */
  complete: boolean;
  durationMs: number;
}

/** Most keys or local files one sync handles; past it the sync is refused (split the prefix). */
export const MAX_SYNC_ENTRIES = 100_000;
/** Transfers in flight at once. */
const PARALLEL = 8;
/** A transfer that moves no byte for this long is abandoned (reported as failed). */
const IDLE_MS = 60_000;
/** Multipart part size: lib-storage switches to multipart for anything larger. */
export const PART_BYTES = 8 * 1024 * 1024;

interface LocalFile {
  size: number;
  mtime: string;
}

const mtimeOf = (e: FileEntry) => `${e.mtimeSec ?? Math.floor(Date.parse(e.modifiedAt) / 1000)}.${e.mtimeNs ?? 0}`;

/** A key's path below the prefix, if it is one a directory can hold. */
function safeRel(rel: string): boolean {
  return rel.length > 0 && rel.length <= 4096 && !rel.includes('\0') && !rel.startsWith('/') && rel.split('/').every((p) => p !== '' && p !== '.' && p !== '..');
}

/** Count bytes past `max` as an error, and give up when nothing moves for IDLE_MS. */
function guard(what: string, max: number, hash?: Hash): Transform {
  let n = 0;
  let timer: NodeJS.Timeout | undefined;
  const t: Transform = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      arm();
      if (n > max) return cb(new CordonError('payload_too_large', `${what} grew past the sync's bound of ${max} bytes while it was copied`));
      hash?.update(chunk);
      cb(null, chunk);
    },
    flush(cb) {
      clearTimeout(timer);
      cb();
    },
    destroy(err, cb) {
      clearTimeout(timer);
      cb(err);
    },
  });
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => t.destroy(new CordonError('deadline_exceeded', `${what}: no data moved for ${IDLE_MS / 1000}s`)), IDLE_MS);
    timer.unref();
  };
  arm();
  return t;
}

function pipeGuarded(src: Readable, what: string, max: number, hash?: Hash): Readable {
  const g = guard(what, max, hash);
  src.on('error', (e) => g.destroy(e));
  g.on('close', () => src.destroy());
  return src.pipe(g);
}

async function pool<T>(items: T[], fn: (t: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: Math.min(PARALLEL, items.length) }, async () => {
    while (i < items.length) await fn(items[i++]);
  }));
}

export class S3Transfer {
  private readonly report: SyncReport;
  private readonly t0 = performance.now();

  constructor(
    private readonly spec: S3SyncSpec,
    private readonly client: S3Client,
    private readonly files: SandboxFiles,
    private readonly manifest: SyncManifest,
    direction: 'pull' | 'push',
  ) {
    this.report = { direction, bucket: spec.bucket, prefix: spec.prefix, path: spec.path, files: 0, bytes: 0, deleted: 0, unchanged: 0, skipped: [], conflicts: [], failed: [], complete: false, durationMs: 0 };
  }

  private abs(rel: string) {
    return posix.join(this.spec.path, rel);
  }

  private finish(): SyncReport {
    const r = this.report;
    r.complete = !r.failed.length && !r.conflicts.length;
    r.durationMs = Math.round(performance.now() - this.t0);
    return r;
  }

  private async remote(): Promise<Map<string, { etag: string; size: number }>> {
    const out = new Map<string, { etag: string; size: number }>();
    let token: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.spec.bucket, Prefix: this.spec.prefix, ContinuationToken: token }));
      for (const o of page.Contents ?? []) {
        const rel = (o.Key ?? '').slice(this.spec.prefix.length);
        if (rel.endsWith('/')) continue; // a "directory" marker
        if (!safeRel(rel)) {
          this.report.skipped.push({ path: o.Key ?? '', reason: 'a key that is no file name below the prefix (empty, ".", ".." or NUL segments)' });
          continue;
        }
        out.set(rel, { etag: o.ETag ?? '', size: o.Size ?? 0 });
        if (out.size > MAX_SYNC_ENTRIES) throw new CordonError('payload_too_large', `s3 sync: more than ${MAX_SYNC_ENTRIES} objects under s3://${this.spec.bucket}/${this.spec.prefix}; sync a narrower prefix`);
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  /** Regular files below the directory; links and special files are reported, never opened. */
  private async local(create: boolean): Promise<{ files: Map<string, LocalFile>; special: Set<string> }> {
    const files = new Map<string, LocalFile>();
    const special = new Set<string>();
    const root = await this.files.stat(this.spec.path).catch((e) => {
      if (e instanceof CordonError && e.code === 'not_found') return undefined;
      throw e;
    });
    if (!root) {
      if (create) await this.files.mkdir(this.spec.path);
      return { files, special };
    }
    if (root.type !== 'dir') throw new CordonError('invalid_argument', `s3 sync: ${this.spec.path} in the sandbox is not a directory (${root.type}); the sync needs a directory there`);
    const prefix = `${this.spec.path}/`;
    const entries = await this.files.list(this.spec.path, 64);
    if (entries.length > MAX_SYNC_ENTRIES) throw new CordonError('payload_too_large', `s3 sync: more than ${MAX_SYNC_ENTRIES} entries under ${this.spec.path}; sync a smaller directory`);
    for (const e of entries) {
      const rel = e.path.slice(prefix.length);
      if (e.type === 'dir') continue;
      if (e.type === 'file') {
        files.set(rel, { size: e.size, mtime: mtimeOf(e) });
        continue;
      }
      special.add(rel);
      this.report.skipped.push({ path: e.path, reason: e.type === 'symlink' ? `a symbolic link (to ${e.symlinkTarget ?? '?'}): links are not followed` : 'not a regular file (a FIFO, socket or device)' });
    }
    return { files, special };
  }

  private failed(path: string, e: unknown) {
    this.report.failed.push({ path, reason: (e as Error).message ?? String(e) });
  }

  /**
   * Whether the file here differs from what the last sync left. Size first; an mtime that moved on a
   * file of the same size (a touch, or a runtime that reports times differently after a restart) is
   * settled by the content's MD5, read through the sandbox, and the manifest takes the new mtime.
   */
  private async localChanged(rel: string, l: LocalFile | undefined, m: ManifestEntry): Promise<boolean> {
    if (!l || l.size !== m.size) return true;
    if (l.mtime === m.mtime) return false;
    if (!m.md5) return true;
    const hash = createHash('md5');
    const { stream } = await this.files.read(this.abs(rel));
    for await (const _ of pipeGuarded(stream, this.abs(rel), this.spec.maxFileBytes, hash));
    if (hash.digest('hex') !== m.md5) return true;
    await this.manifest.set(rel, { ...m, mtime: l.mtime });
    return false;
  }

  /** Sandbox → bucket: new and changed files up, files deleted here deleted there. */
  async push(): Promise<SyncReport> {
    const { spec, manifest, report } = this;
    const [remote, { files: local, special }] = [await this.remote(), await this.local(false)];
    const work: string[] = [];
    for (const [rel, l] of local) {
      const m = manifest.get(rel);
      if (m && !(await this.localChanged(rel, l, m).catch(() => true))) {
        report.unchanged++;
        continue;
      }
      const r = remote.get(rel);
      if (m ? r?.etag !== m.etag : !!r) {
        report.conflicts.push({ path: this.abs(rel), reason: m ? (r ? 'changed here and in the bucket since the last sync' : 'changed here and deleted in the bucket since the last sync') : 'new here and present in the bucket, never synced' });
        continue;
      }
      if (l.size > spec.maxFileBytes) {
        report.skipped.push({ path: this.abs(rel), reason: `larger (${l.size} bytes) than the sync's bound of ${spec.maxFileBytes} bytes` });
        continue;
      }
      work.push(rel);
    }
    await pool(work, async (rel) => {
      const l = local.get(rel)!;
      try {
        const { stream } = await this.files.read(this.abs(rel));
        const hash = createHash('md5');
        const body = pipeGuarded(stream, this.abs(rel), spec.maxFileBytes, hash);
        const up = new Upload({ client: this.client, params: { Bucket: spec.bucket, Key: spec.prefix + rel, Body: body }, partSize: PART_BYTES, queueSize: 4, leavePartsOnError: false });
        let sent = 0;
        up.on('httpUploadProgress', (p) => (sent = p.loaded ?? sent));
        const out = await up.done();
        await manifest.set(rel, { size: l.size, mtime: l.mtime, etag: out.ETag ?? '', md5: hash.digest('hex') });
        report.files++;
        report.bytes += sent || l.size;
      } catch (e) {
        this.failed(this.abs(rel), e);
      }
    });
    // Deleted here since the last sync: deleted there too, unless the bucket changed it meanwhile.
    const gone = [...manifest.entries.keys()].filter((rel) => !local.has(rel) && !special.has(rel));
    await pool(gone, async (rel) => {
      const m = manifest.get(rel)!;
      const r = remote.get(rel);
      try {
        if (!r) return await manifest.set(rel, undefined);
        if (r.etag !== m.etag) return void report.conflicts.push({ path: this.abs(rel), reason: 'deleted here and changed in the bucket since the last sync' });
        await this.client.send(new DeleteObjectCommand({ Bucket: spec.bucket, Key: spec.prefix + rel }));
        await manifest.set(rel, undefined);
        report.deleted++;
      } catch (e) {
        this.failed(this.abs(rel), e);
      }
    });
    await manifest.compact();
    return this.finish();
  }

  /** Bucket → sandbox: new and changed objects down, objects deleted there deleted here. */
  async pull(): Promise<SyncReport> {
    const { spec, manifest, report } = this;
    const remote = await this.remote();
    const { files: local, special } = await this.local(true);
    const work: string[] = [];
    for (const [rel, r] of remote) {
      const m = manifest.get(rel);
      if (m && m.etag === r.etag) {
        report.unchanged++;
        continue;
      }
      const l = local.get(rel);
      if (special.has(rel) || (m ? await this.localChanged(rel, l, m).catch(() => true) : !!l)) {
        report.conflicts.push({ path: this.abs(rel), reason: special.has(rel) ? 'changed in the bucket; here it is a link or special file' : m ? (l ? 'changed in the bucket and here since the last sync' : 'changed in the bucket and deleted here since the last sync') : 'new in the bucket and present here, never synced' });
        continue;
      }
      if (r.size > spec.maxFileBytes) {
        report.skipped.push({ path: this.abs(rel), reason: `larger (${r.size} bytes) than the sync's bound of ${spec.maxFileBytes} bytes` });
        continue;
      }
      work.push(rel);
    }
    await pool(work, async (rel) => {
      try {
        const got = await this.client.send(new GetObjectCommand({ Bucket: spec.bucket, Key: spec.prefix + rel }));
        const hash = createHash('md5');
        const body = pipeGuarded(got.Body as Readable, `s3://${spec.bucket}/${spec.prefix}${rel}`, spec.maxFileBytes, hash);
        const e = await this.files.write(this.abs(rel), body, { parents: true });
        await manifest.set(rel, { size: e.size, mtime: mtimeOf(e), etag: got.ETag ?? remote.get(rel)!.etag, md5: hash.digest('hex') });
        report.files++;
        report.bytes += e.size;
      } catch (e) {
        this.failed(this.abs(rel), e);
      }
    });
    // Deleted in the bucket since the last sync: deleted here too, unless changed here meanwhile.
    const gone = [...manifest.entries.keys()].filter((rel) => !remote.has(rel));
    await pool(gone, async (rel) => {
      const m = manifest.get(rel)!;
      const l = local.get(rel);
      try {
        if (!l && !special.has(rel)) return await manifest.set(rel, undefined);
        if (await this.localChanged(rel, l, m).catch(() => true)) return void report.conflicts.push({ path: this.abs(rel), reason: 'deleted in the bucket and changed here since the last sync' });
        await this.files.remove(this.abs(rel), undefined, false, true);
        await manifest.set(rel, undefined);
        report.deleted++;
      } catch (e) {
        this.failed(this.abs(rel), e);
      }
    });
    await manifest.compact();
    return this.finish();
  }
}
