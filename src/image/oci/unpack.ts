import { createWriteStream } from 'node:fs';
import { chmod, lchown, link, lstat, lutimes, mkdir, readlink, rm, symlink, utimes } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { runOk } from '../../util/proc.js';

// Unpacks one layer tar into its own directory in the form overlayfs reads: whiteouts become 0/0
// character devices, opaque directories get trusted.overlay.opaque=y. Every path is resolved inside
// the layer directory without following a symlink out of it.

const XATTR = 'SCHILY.xattr.';

// tar-stream decodes pax values as UTF-8, which mangles binary xattrs (security.capability); keep them as
// latin1 (one char per byte) so they reach setfattr unchanged.
const headers = createRequire(import.meta.url)('tar-stream/headers.js') as { decodePax: (b: Buffer) => Record<string, string> };
headers.decodePax = (buf: Buffer) => {
  const out: Record<string, string> = {};
  while (buf.length) {
    let i = 0;
    while (i < buf.length && buf[i] !== 32) i++;
    const len = parseInt(buf.subarray(0, i).toString(), 10);
    if (!len || len > buf.length) return out;
    const rec = buf.subarray(i + 1, len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq === -1) return out;
    const key = rec.subarray(0, eq).toString('utf8');
    out[key] = rec.subarray(eq + 1).toString(key.startsWith(XATTR) ? 'latin1' : 'utf8');
    buf = buf.subarray(len);
  }
  return out;
};

export class LayerEscapeError extends Error {}

/** Path components of an entry name; `..` anywhere is refused rather than cleaned. */
export function entryParts(name: string): string[] {
  const parts = name.split('/').filter((p) => p && p !== '.');
  if (parts.some((p) => p === '..')) throw new LayerEscapeError(`layer entry "${name}" contains ".."`);
  if (parts.some((p) => p.includes('\0'))) throw new LayerEscapeError(`layer entry "${name}" contains NUL`);
  return parts;
}

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
      if (++hops > 40) throw new LayerEscapeError(`too many symlinks resolving ${parts.join('/')}`);
      const target = await readlink(next);
      if (target.startsWith('/')) cur = root;
      queue.unshift(...target.split('/'));
    } else if (st.isDirectory()) cur = next;
    else throw new LayerEscapeError(`layer entry ${parts.join('/')}: ${p} is not a directory`);
  }
  return cur;
}

async function mknod(path: string, type: 'c' | 'b' | 'p', major = 0, minor = 0): Promise<void> {
  await runOk('mknod', type === 'p' ? [path, 'p'] : [path, type, String(major), String(minor)]);
}

async function setXattr(path: string, name: string, value: Buffer): Promise<void> {
  await runOk('setfattr', ['-h', '-n', name, '-v', `0x${value.toString('hex')}`, path]);
}

export interface UnpackStats {
  entries: number;
  bytes: number;
}

/** Read a layer tar (already decompressed) from `input` into the existing empty directory `root`. */
export async function unpackLayer(input: Readable, root: string): Promise<UnpackStats> {
  const stats: UnpackStats = { entries: 0, bytes: 0 };
  const dirTimes: [string, Date][] = [];
  const ex = tar.extract();
  ex.on('entry', (header, stream, next) => {
    applyEntry(root, header, stream, dirTimes, stats).then(
      () => next(),
      (e: Error) => {
        stream.resume();
        ex.destroy(e);
      },
    );
  });
  await pipeline(input, ex);
  // Directory times last: creating entries inside a directory moves its mtime.
  for (const [p, t] of dirTimes.reverse()) await utimes(p, t, t).catch(() => {});
  return stats;
}

async function applyEntry(root: string, h: tar.Headers, body: Readable, dirTimes: [string, Date][], stats: UnpackStats): Promise<void> {
  stats.entries++;
  const parts = entryParts(h.name);
  const drain = async () => {
    for await (const _ of body) void _;
  };
  if (!parts.length) {
    if (h.type === 'directory') await applyMeta(root, h, dirTimes);
    return drain();
  }
  const base = parts[parts.length - 1];
  const dir = await resolveDirInLayer(root, parts.slice(0, -1));
  if (base === '.wh..wh..opq') {
    await setXattr(dir, 'trusted.overlay.opaque', Buffer.from('y'));
    return drain();
  }
  if (base.startsWith('.wh..wh.')) return drain();
  if (base.startsWith('.wh.')) {
    const hidden = join(dir, base.slice(4));
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
      if (!lp.length) throw new LayerEscapeError(`hard link ${h.name} has no target`);
      const src = join(await resolveDirInLayer(root, lp.slice(0, -1)), lp[lp.length - 1]);
      const st = await lstat(src).catch(() => undefined);
      if (!st || st.isDirectory()) throw new LayerEscapeError(`hard link ${h.name} points at ${h.linkname}, which is not a file in this layer`);
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
async function applyMeta(path: string, h: tar.Headers, dirTimes: [string, Date][]): Promise<void> {
  await lchown(path, h.uid ?? 0, h.gid ?? 0);
  if (h.type !== 'symlink') await chmod(path, (h.mode ?? 0o644) & 0o7777);
  for (const [k, v] of Object.entries((h as { pax?: Record<string, string> }).pax ?? {})) {
    if (k.startsWith(XATTR)) await setXattr(path, k.slice(XATTR.length), Buffer.from(v, 'latin1'));
  }
  const t = h.mtime ?? new Date(0);
  if (h.type === 'directory') dirTimes.push([path, t]);
  else await lutimes(path, t, t).catch(() => {});
}
