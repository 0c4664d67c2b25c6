import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, lstat, mkdir, readdir, readFile, readlink, symlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CordonError } from '../../errors/registry.js';
import { entryParts } from '../oci/layer-entry.js';
import { UnsafeLayerError } from '../oci/layer-limits.js';
import { layerExtract, type LayerHeaders } from '../oci/tar-extract.js';
import { resolveDirInLayer } from '../oci/unpack.js';
import { ignoreMatcher } from './dockerignore.js';

// The build context: the tar the client uploaded, unpacked into a private directory of the daemon.
// Only regular files, directories and symlinks are kept; a symlink stays a link (it is never followed
// when files are chosen or copied), and every entry name is checked before a path is built from it.

/** Where the CLI puts a Dockerfile from outside the context; never part of what COPY sees. */
export const OUTSIDE_DOCKERFILE = '.cordon-build.Dockerfile';

export interface ContextLimits {
  maxBytes: number;
  maxEntries: number;
}

export interface ContextEntry {
  /** Path relative to the context root, "/"-separated, no leading "./". */
  rel: string;
  type: 'file' | 'dir' | 'symlink';
  mode: number;
  size: number;
  link?: string;
}

/** Unpack the uploaded context tar into the empty directory `dir`. */
export async function extractContext(input: Readable, dir: string, limits: ContextLimits): Promise<void> {
  let bytes = 0;
  let entries = 0;
  const ex = layerExtract();
  ex.on('entry', (header, stream, next) => {
    stream.on('error', () => {});
    const h = header as LayerHeaders;
    const apply = async () => {
      if (++entries > limits.maxEntries) throw new CordonError('payload_too_large', `the build context has more than ${limits.maxEntries} entries (cordon serve --max-layer-entries); add a .dockerignore`);
      bytes += h.size ?? 0;
      if (bytes > limits.maxBytes) throw new CordonError('payload_too_large', `the build context is larger than ${limits.maxBytes} bytes (cordon serve --max-upload); add a .dockerignore`);
      const parts = entryParts(h.name);
      if (!parts.length) return drain(stream);
      const parent = await resolveDirInLayer(dir, parts.slice(0, -1));
      const target = join(parent, parts[parts.length - 1]);
      const existing = await lstat(target).catch(() => undefined);
      if (existing && !(existing.isDirectory() && h.type === 'directory')) throw new CordonError('invalid_argument', `the build context has ${h.name} twice`);
      const mode = (h.mode ?? 0o644) & 0o7777;
      if (h.type === 'file' || h.type === 'contiguous-file') {
        await pipeline(stream, createWriteStream(target, { flags: 'wx', mode: 0o600 }));
        await chmod(target, mode);
        return;
      }
      if (h.type === 'directory') {
        if (!existing) await mkdir(target, { mode: 0o700 });
        await chmod(target, mode);
      } else if (h.type === 'symlink') await symlink(h.linkname ?? '', target);
      else if (h.type !== 'pax-header' && h.type !== 'pax-global-header') {
        throw new CordonError('invalid_argument', `the build context entry ${h.name} is a ${h.type}; only files, directories and symlinks can be sent`);
      }
      return drain(stream);
    };
    apply().then(
      () => next(),
      (e: Error) => {
        stream.resume();
        ex.destroy(e);
      },
    );
  });
  try {
    await pipeline(input, ex);
  } catch (e) {
    if (e instanceof CordonError) throw e;
    if (e instanceof UnsafeLayerError) throw new CordonError('invalid_argument', `the build context is unsafe: ${e.message.replace(/^layer /, '')}`);
    throw new CordonError('invalid_argument', `the build context is not a readable tar: ${(e as Error).message}`);
  }
}

async function drain(s: Readable): Promise<void> {
  for await (const _ of s) void _;
}

/** Every entry of the context that .dockerignore does not exclude, sorted by path. */
export async function listContext(dir: string): Promise<ContextEntry[]> {
  const ignoreFile = await lstat(join(dir, '.dockerignore')).catch(() => undefined);
  const ignored = ignoreMatcher(ignoreFile?.isFile() ? await readFile(join(dir, '.dockerignore'), 'utf8') : '');
  const out: ContextEntry[] = [];
  const walk = async (rel: string) => {
    for (const d of await readdir(join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (r === OUTSIDE_DOCKERFILE) continue;
      const st = await lstat(join(dir, r));
      const isDir = st.isDirectory();
      if (ignored(r, isDir)) {
        // An excluded directory may still hold re-included (!) paths.
        if (isDir && ignored.mayReinclude(r)) await walk(r);
        continue;
      }
      if (st.isSymbolicLink()) out.push({ rel: r, type: 'symlink', mode: 0o777, size: 0, link: await readlink(join(dir, r)) });
      else if (isDir) {
        out.push({ rel: r, type: 'dir', mode: st.mode & 0o7777, size: 0 });
        await walk(r);
      } else if (st.isFile()) out.push({ rel: r, type: 'file', mode: st.mode & 0o7777, size: st.size });
    }
  };
  await walk('');
  return out.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
}

/** One file to copy: where it comes from in the context, where it goes in the image. */
export interface CopyItem {
  entry: ContextEntry;
  /** Absolute destination path inside the image. */
  dest: string;
}

const GLOB = /[*?[]/;

/** A context-relative path from a COPY source; refuses what would leave the context. */
function contextPath(src: string): string {
  if (src.includes('\0')) throw new CordonError('invalid_argument', `COPY source ${JSON.stringify(src)} contains NUL`);
  const n = posix.normalize(`/${src}`).slice(1).replace(/\/$/, '');
  if (posix.normalize(src).startsWith('..') || src.split('/').includes('..')) throw new CordonError('invalid_argument', `COPY source ${src} is outside the build context; copy only files under the context directory`);
  return n === '.' ? '' : n;
}

function globRegex(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 1);
      if (end < 0) re += '\\[';
      else {
        re += `[${pattern.slice(i + 1, end).replace(/^!/, '^').replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/**
 * What `COPY srcs... dest` copies, Docker's way: a directory's contents (not the directory itself) go
 * into dest; a file goes to dest, or into it when dest ends in "/" or there are several sources.
 * A source whose path goes through a symlink is refused (links are copied, never followed).
 */
export function selectCopy(entries: ContextEntry[], srcs: string[], dest: string): CopyItem[] {
  const byRel = new Map(entries.map((e) => [e.rel, e]));
  const roots: ContextEntry[] = [];
  for (const src of srcs) {
    const rel = contextPath(src);
    if (rel === '') {
      roots.push({ rel: '', type: 'dir', mode: 0o755, size: 0 });
      continue;
    }
    if (GLOB.test(rel)) {
      const re = globRegex(rel);
      const hits = entries.filter((e) => re.test(e.rel));
      if (!hits.length) throw new CordonError('invalid_argument', `COPY source ${src} matches no file in the build context`);
      roots.push(...hits);
      continue;
    }
    const e = byRel.get(rel);
    if (!e) {
      const parts = rel.split('/');
      for (let i = 1; i < parts.length; i++) {
        if (byRel.get(parts.slice(0, i).join('/'))?.type === 'symlink') throw new CordonError('invalid_argument', `COPY source ${src} goes through the symlink ${parts.slice(0, i).join('/')}; symlinks in the context are copied as links, never followed`);
      }
      throw new CordonError('invalid_argument', `COPY source ${src} is not in the build context (or .dockerignore excludes it)`);
    }
    roots.push(e);
  }
  const intoDir = dest.endsWith('/') || roots.length > 1;
  const items: CopyItem[] = [];
  for (const r of roots) {
    if (r.type !== 'dir') {
      items.push({ entry: r, dest: intoDir ? posix.join(dest, posix.basename(r.rel)) : dest });
      continue;
    }
    const prefix = r.rel ? `${r.rel}/` : '';
    for (const e of entries) if (e.rel.startsWith(prefix) && e.rel !== r.rel) items.push({ entry: e, dest: posix.join(dest, e.rel.slice(prefix.length)) });
  }
  return items;
}

/** Content hash of what a COPY takes: names, types, modes, link targets and file contents. */
export async function hashItems(dir: string, items: CopyItem[]): Promise<string> {
  const h = createHash('sha256');
  for (const it of items) {
    h.update(JSON.stringify([it.dest, it.entry.type, it.entry.mode, it.entry.link ?? null, it.entry.size]));
    if (it.entry.type === 'file') {
      for await (const c of createReadStream(join(dir, it.entry.rel))) h.update(c as Buffer);
    }
  }
  return h.digest('hex');
}
