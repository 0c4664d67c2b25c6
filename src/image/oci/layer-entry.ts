import { UnsafeLayerError } from './layer-limits.js';

// Which entry names a layer may use, and what a whiteout name means. Names are checked before any
// path is built from them, so nothing here touches the filesystem.

const MAX_NAME_BYTES = 255;
const MAX_PATH_BYTES = 4096;

/**
 * Path components of an entry name. Real layers write "etc/passwd", "./etc/passwd", and directories
 * with a trailing "/", and name the root "." or "./"; those spellings are accepted. Anything else that
 * would need cleaning ("a//b", "a/./b", "/etc", "..") is refused: a name that is not already clean
 * is a sign of a crafted layer, and refusing is simpler to get right than cleaning.
 */
export function entryParts(name: string): string[] {
  const bad = (why: string) => new UnsafeLayerError(`layer entry "${name.slice(0, 200)}" ${why}`);
  if (name.includes('\0')) throw bad('contains NUL');
  if (Buffer.byteLength(name) > MAX_PATH_BYTES) throw bad(`is longer than ${MAX_PATH_BYTES} bytes`);
  if (name.startsWith('/')) throw bad('is an absolute path');
  let rest = name === '.' ? '' : name.startsWith('./') ? name.slice(2) : name;
  if (rest.endsWith('/')) rest = rest.slice(0, -1);
  if (rest === '') {
    if (name === '') throw bad('has an empty name');
    return [];
  }
  const parts = rest.split('/');
  for (const p of parts) {
    if (p === '..') throw bad('contains ".."');
    if (p === '' || p === '.') throw bad('has an empty or "." path component');
    if (Buffer.byteLength(p) > MAX_NAME_BYTES) throw bad(`has a component longer than ${MAX_NAME_BYTES} bytes`);
  }
  return parts;
}

export type Whiteout = { kind: 'none' } | { kind: 'opaque' } | { kind: 'meta' } | { kind: 'file'; hides: string };

/**
 * What the last component of an entry means in the OCI layer format: ".wh..wh..opq" makes its directory
 * opaque, other ".wh..wh." names are AUFS bookkeeping (ignored), ".wh.NAME" deletes NAME from the layers
 * below. NAME must be a plain file name: ".wh.", ".wh.." and ".wh..." would name the directory itself or
 * its parent.
 */
export function whiteoutOf(base: string): Whiteout {
  if (!base.startsWith('.wh.')) return { kind: 'none' };
  if (base === '.wh..wh..opq') return { kind: 'opaque' };
  if (base.startsWith('.wh..wh.')) return { kind: 'meta' };
  const hides = base.slice('.wh.'.length);
  if (hides === '' || hides === '.' || hides === '..') throw new UnsafeLayerError(`whiteout "${base}" names no file (it would delete a directory instead)`);
  return { kind: 'file', hides };
}
