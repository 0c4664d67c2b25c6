import { createWriteStream } from 'node:fs';
import { chmod, lchown, link, lstat, lutimes, mkdir, readlink, rm, symlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { runOk } from '../../util/proc.js';
import { formatBytes } from '../../util/units.js';
import { entryParts, whiteoutOf } from './layer-entry.js';
import { LayerTooLargeError, UnsafeLayerError } from './layer-limits.js';
import { layerExtract, XATTR_PREFIX, type LayerHeaders } from './tar-extract.js';

// Unpacks one layer tar into its own directory in the form overlayfs reads: whiteouts become 0/0
// character devices, opaque directories get trusted.overlay.opaque=y. Every path is resolved inside
// the layer directory without following a symlink out of it; names are checked in layer-entry.ts.

/**
 * The real directory for `parts` inside `root`, creating missing ones. A symlink met on the way is
 * followed as if `root` were `/` (absolute targets restart at root, `..` stops at root), like Docker.
 */
export async function resolveDirInLayer(root: string, parts: string[]): Promise<string> {
  let cur = root;
  const queue = [...parts];
  let hops = 0;
  while (queue.length) {
    const p = queue.shift()!;
    if (p === '' || p === '.') continue;
    if (p === '..') {
      cur = cur === root ? root : dirname(cur);
      continue;
    }
    const next = join(cur, p);
    const st = await lstat(next).catch(() => undefined);
    if (!st) {
      await mkdir(next, { mode: 0o755 });
      cur = next;
    } else if (st.isSymbolicLink()) {
      if (++hops > 40) throw new UnsafeLayerError(`too many symlinks resolving ${parts.join('/')}`);
      const target = await readlink(next);
      if (target.startsWith('/')) cur = root;
      queue.unshift(...target.split('/'));
    } else if (st.isDirectory()) cur = next;
    else throw new UnsafeLayerError(`layer entry ${parts.join('/')}: ${p} is not a directory`);
  }
  return cur;
}

/** PATH_MAX: symlink(2) refuses longer targets. */
const MAX_LINK_BYTES = 4096;
const HELPER_DEADLINE = { timeoutMs: 60_000 };
/** The kernel's XATTR_SIZE_MAX. */
const MAX_XATTR_BYTES = 64 * 1024;
/** overlayfs's own xattrs (opaque, redirect, metacopy, origin…) would change how the overlay resolves paths. */
const OVERLAY_XATTR = 'trusted.overlay.';

async function mknod(path: string, type: 'c' | 'b' | 'p', major = 0, minor = 0): Promise<void> {
  await runOk('mknod', type === 'p' ? [path, 'p'] : [path, type, String(major), String(minor)], HELPER_DEADLINE);
}

async function setXattr(path: string, name: string, value: Buffer): Promise<void> {
  await runOk('setfattr', ['-h', '-n', name, '-v', `0s${value.toString('base64')}`, path], HELPER_DEADLINE);
}

export interface UnpackStats {
  entries: number;
  bytes: number;
}

export interface UnpackOptions {
  /** Refuse the tar past this many entries. */
  maxEntries?: number;
  /** Refuse any one file larger than this (import archives: no member may be larger than a layer). */
  maxFileBytes?: number;
  /** What the tar is, for errors ("layer", "archive"). */
  what?: string;
}

/** Read a layer tar (already decompressed) from `input` into the existing empty directory `root`. */
export async function unpackLayer(input: Readable, root: string, opts: UnpackOptions = {}): Promise<UnpackStats> {
  const stats: UnpackStats = { entries: 0, bytes: 0 };
  const dirTimes: [string, Date][] = [];
  const ex = layerExtract();
  ex.on('entry', (header, stream, next) => {
    // Giving up on the tar destroys the body being read with the same error, which the pipeline below
    // reports; without a listener it would also be thrown as uncaught and end the daemon.
    stream.on('error', () => {});
    const checked = checkLimits(header as LayerHeaders, stats, opts);
    (checked ?? applyEntry(root, header as LayerHeaders, stream, dirTimes, stats)).then(
      () => next(),
      (e: Error) => {
        stream.resume();
        ex.destroy(e);
      },
    );
  });
  await pipeline(input, ex);
  // Directory times last: creating entries inside a directory moves its mtime. lutimes, because a later
  // entry may have replaced the directory with a symlink.
  for (const [p, t] of dirTimes.reverse()) await lutimes(p, t, t).catch(() => {});
  return stats;
}

/** A rejected promise when this entry is past a limit, before anything of it is written. */
function checkLimits(h: LayerHeaders, stats: UnpackStats, opts: UnpackOptions): Promise<never> | undefined {
  stats.entries++;
  const what = opts.what ?? 'layer';
  if (opts.maxEntries !== undefined && stats.entries > opts.maxEntries) return Promise.reject(new LayerTooLargeError('entries', opts.maxEntries, what));
  if (opts.maxFileBytes !== undefined && (h.size ?? 0) > opts.maxFileBytes) {
    return Promise.reject(new LayerTooLargeError('bytes', opts.maxFileBytes, what, `${what} member ${h.name.slice(0, 200)} is ${formatBytes(h.size ?? 0)}, more than ${formatBytes(opts.maxFileBytes)}`));
  }
  return undefined;
}

async function applyEntry(root: string, h: LayerHeaders, body: Readable, dirTimes: [string, Date][], stats: UnpackStats): Promise<void> {
  const parts = entryParts(h.name);
  if (h.linkname && Buffer.byteLength(h.linkname) > MAX_LINK_BYTES) throw new UnsafeLayerError(`layer entry ${h.name} links to a path longer than ${MAX_LINK_BYTES} bytes`);
  const drain = async () => {
    for await (const _ of body) void _;
  };
  if (!parts.length) {
    if (h.type === 'directory') await applyMeta(root, h, dirTimes);
    return drain();
  }
  const base = parts[parts.length - 1];
  const whiteout = whiteoutOf(base);
  const dir = await resolveDirInLayer(root, parts.slice(0, -1));
  if (whiteout.kind === 'opaque') {
    await setXattr(dir, 'trusted.overlay.opaque', Buffer.from('y'));
    return drain();
  }
  if (whiteout.kind === 'meta') return drain();
  if (whiteout.kind === 'file') {
    // `hides` is one plain name (no "/", not "." or ".."), and `dir` is inside the layer.
    const hidden = join(dir, whiteout.hides);
    await rm(hidden, { recursive: true, force: true });
    await mknod(hidden, 'c', 0, 0);
    return drain();
  }
  const target = join(dir, base);
  const existing = await lstat(target).catch(() => undefined);
  if (existing && !(existing.isDirectory() && h.type === 'directory')) await rm(target, { recursive: true, force: true });
  switch (h.type) {
    case 'file':
    case 'contiguous-file':
      await pipeline(body, createWriteStream(target, { flags: 'wx', mode: 0o600 }));
      stats.bytes += h.size ?? 0;
      break;
    case 'directory':
      if (!existing) await mkdir(target, { mode: 0o700 });
      await drain();
      break;
    case 'symlink':
      await symlink(h.linkname ?? '', target);
      await drain();
      break;
    case 'link': {
      const lp = entryParts(h.linkname ?? '');
      if (!lp.length) throw new UnsafeLayerError(`hard link ${h.name} has no target`);
      const src = join(await resolveDirInLayer(root, lp.slice(0, -1)), lp[lp.length - 1]);
      const st = await lstat(src).catch(() => undefined);
      if (!st || st.isDirectory()) throw new UnsafeLayerError(`hard link ${h.name} points at ${h.linkname}, which is not a file in this layer`);
      if (st.isCharacterDevice() && st.rdev === 0) throw new UnsafeLayerError(`hard link ${h.name} points at ${h.linkname}, which this layer deleted (a whiteout)`);
      await link(src, target);
      return drain(); // a hard link shares its target's inode and metadata
    }
    case 'character-device':
    case 'block-device':
    case 'fifo':
      await mknod(target, h.type === 'fifo' ? 'p' : h.type === 'block-device' ? 'b' : 'c', h.devmajor ?? 0, h.devminor ?? 0);
      await drain();
      break;
    default:
      return drain();
  }
  await applyMeta(target, h, dirTimes);
}

/** Owner, then mode (chown clears setuid bits, so mode goes second), xattrs and times. */
async function applyMeta(path: string, h: LayerHeaders, dirTimes: [string, Date][]): Promise<void> {
  await lchown(path, h.uid ?? 0, h.gid ?? 0);
  if (h.type !== 'symlink') await chmod(path, (h.mode ?? 0o644) & 0o7777);
  for (const [k, v] of Object.entries(h.pax ?? {})) {
    const name = k.startsWith(XATTR_PREFIX) ? k.slice(XATTR_PREFIX.length) : undefined;
    if (!name || name.startsWith(OVERLAY_XATTR)) continue;
    const value = Buffer.isBuffer(v) ? v : Buffer.from(v);
    if (value.length > MAX_XATTR_BYTES) throw new UnsafeLayerError(`layer entry ${h.name} has a ${value.length}-byte xattr ${name}; the kernel allows ${MAX_XATTR_BYTES}`);
    await setXattr(path, name, value);
  }
  const t = h.mtime ?? new Date(0);
  if (h.type === 'directory') dirTimes.push([path, t]);
  else await lutimes(path, t, t).catch(() => {});
}
