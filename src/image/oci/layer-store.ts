import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm, symlink, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CordonError } from '../../errors/registry.js';
import { decompress, HashTap, READ_AHEAD_BYTES } from './decompress.js';
import { DEFAULT_LAYER_LIMITS, LayerTooLargeError, UnsafeLayerError, type LayerLimits } from './layer-limits.js';
import { unpackLayer } from './unpack.js';

export interface LayerSource {
  /** Digest of the bytes as fetched (compressed); checked when `blobDigest` is given. */
  blobDigest?: string;
  open(): Promise<{ stream: Readable; size?: number }>;
}

export type ByteListener = (n: number) => void;

interface InFlight {
  done: Promise<void>;
  listeners: Set<ByteListener>;
}

/**
 * Unpacked layers, addressed by diff ID (the digest of the uncompressed tar). A layer is unpacked into
 * tmp/ and renamed into layers/ only after both digests check out, so a directory under layers/ is
 * always complete. Each layer also gets a short name under l/ to keep overlay mount options small.
 */
export class LayerStore {
  readonly layersDir: string;
  readonly shortDir: string;
  readonly tmpDir: string;
  private readonly inflight = new Map<string, InFlight>();

  constructor(readonly root: string, readonly limits: LayerLimits = DEFAULT_LAYER_LIMITS) {
    this.layersDir = join(root, 'layers');
    this.shortDir = join(root, 'l');
    this.tmpDir = join(root, 'tmp');
  }

  /** Create the folders and clear what an interrupted pull or prune left in tmp/. */
  async init(): Promise<void> {
    await rm(this.tmpDir, { recursive: true, force: true });
    for (const d of [this.layersDir, this.shortDir, this.tmpDir]) await mkdir(d, { recursive: true, mode: 0o700 });
  }

  static hex(diffId: string): string {
    return diffId.slice('sha256:'.length);
  }

  dir(diffId: string): string {
    return join(this.layersDir, LayerStore.hex(diffId));
  }

  /** Short path (l/<12 hex>) that overlayfs is given instead of the long one. */
  shortPath(diffId: string): string {
    return join(this.shortDir, LayerStore.hex(diffId).slice(0, 12));
  }

  has(diffId: string): boolean {
    return existsSync(this.dir(diffId));
  }

  /** Make sure the layer is unpacked; concurrent callers for one layer share a single fetch. */
  async ensure(diffId: string, src: LayerSource, onBytes?: ByteListener): Promise<void> {
    if (this.has(diffId)) return this.link(diffId);
    let f = this.inflight.get(diffId);
    if (!f) {
      const listeners = new Set<ByteListener>();
      const done = this.unpack(diffId, src, (n) => listeners.forEach((l) => l(n))).finally(() => this.inflight.delete(diffId));
      f = { done, listeners };
      this.inflight.set(diffId, f);
    }
    if (onBytes) f.listeners.add(onBytes);
    try {
      await f.done;
    } finally {
      if (onBytes) f.listeners.delete(onBytes);
    }
  }

  private async unpack(diffId: string, src: LayerSource, onBytes: ByteListener): Promise<void> {
    const tmp = join(this.tmpDir, `${LayerStore.hex(diffId).slice(0, 16)}-${randomBytes(4).toString('hex')}`);
    await mkdir(tmp, { mode: 0o755 });
    try {
      const { stream } = await src.open();
      const outer = new HashTap(onBytes);
      const inner = new HashTap(undefined, READ_AHEAD_BYTES);
      const what = `layer ${diffId}`;
      let sourceFailed = false;
      stream.once('error', () => (sourceFailed = true));
      const settled = await Promise.allSettled([
        pipeline(stream, outer, (s: AsyncIterable<Buffer>) => decompress(s, { maxBytes: this.limits.maxBytes, what }), inner),
        unpackLayer(inner, tmp, { maxEntries: this.limits.maxEntries, what }),
      ]);
      const e = firstCause(settled);
      if (e) {
        // A corrupt blob shows as a decompress or tar error before its digest can be checked.
        if (!sourceFailed && !isLayerVerdict(e) && src.blobDigest) throw new CordonError('invalid_argument', `blob ${src.blobDigest} is corrupt (${(e as Error).message}); nothing was kept`);
        throw e;
      }
      if (src.blobDigest) {
        const got = outer.digest();
        if (got !== src.blobDigest) throw digestError(src.blobDigest, got);
      }
      const diff = inner.digest();
      if (diff !== diffId) throw new CordonError('invalid_argument', `layer content does not match the image config: expected diff ID ${diffId}, got ${diff}`);
      await rename(tmp, this.dir(diffId)).catch(async (e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOTEMPTY' && e.code !== 'EEXIST') throw e;
        await rm(tmp, { recursive: true, force: true }); // someone else finished it first
      });
      await this.link(diffId);
    } catch (e) {
      await rm(tmp, { recursive: true, force: true }).catch(() => {});
      if (e instanceof CordonError) throw e;
      if (e instanceof UnsafeLayerError) throw new CordonError('invalid_argument', `layer ${diffId} is unsafe and was rejected: ${e.message}; nothing was kept`);
      if (e instanceof LayerTooLargeError) throw e.toCordonError();
      throw new CordonError('unavailable', `fetching layer ${diffId} failed: ${(e as Error).message}`);
    }
  }

  private async link(diffId: string): Promise<void> {
    const p = this.shortPath(diffId);
    const want = join('..', 'layers', LayerStore.hex(diffId));
    const cur = await readlink(p).catch(() => undefined);
    if (cur === want) return;
    if (cur !== undefined) throw new CordonError('internal', `short layer name ${p} is taken by ${cur}`);
    await symlink(want, p).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
  }

  /** Diff IDs of every complete layer. */
  async list(): Promise<string[]> {
    return (await readdir(this.layersDir)).filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }

  /** Delete a layer: first out of layers/ (so it stops counting as complete), then from disk. */
  async remove(diffId: string): Promise<void> {
    if (this.inflight.has(diffId)) return;
    const doomed = join(this.tmpDir, `rm-${LayerStore.hex(diffId).slice(0, 16)}-${randomBytes(4).toString('hex')}`);
    await rm(this.shortPath(diffId), { force: true });
    await rename(this.dir(diffId), doomed).catch(() => {});
    await rm(doomed, { recursive: true, force: true });
  }
}

const isLayerVerdict = (e: unknown) => e instanceof UnsafeLayerError || e instanceof LayerTooLargeError || e instanceof CordonError;

/** Of the two halves of an unpack, the error that says why: a verdict on the layer beats the other half's "premature close". */
function firstCause(settled: PromiseSettledResult<unknown>[]): unknown {
  const errs = settled.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  return errs.find(isLayerVerdict) ?? errs[0];
}

function digestError(want: string, got: string): CordonError {
  return new CordonError('invalid_argument', `blob ${want} is corrupt: its content hashes to ${got}; nothing was kept`, { expected: want, actual: got });
}
