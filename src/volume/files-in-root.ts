import { constants, createReadStream, type Stats } from 'node:fs';
import { chmod, chown, lstat, mkdir, open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { CordonError } from '../errors/registry.js';
import { run } from '../util/proc.js';

// File operations the host makes on a directory whose content is hostile (a volume a sandbox wrote).
// Every path is walked one component at a time through O_PATH descriptors opened as
// /proc/self/fd/<dir>/<name>, so the kernel looks each name up inside the directory already held and
// a directory swapped for a symlink meanwhile cannot redirect the walk. Symbolic links are never
// followed (anywhere in the path: the operation is refused), only regular files are ever opened for
// reading, never a FIFO or device (their O_PATH descriptor is checked first and the file reopened
// through it), writes go to a new file that is renamed into place (an existing FIFO, device or
// symlink there is replaced, never opened), listings are bounded, and every helper has a deadline.

const O_PATH = 0o10000000;
const MAX_DEPTH = 256;
/** Entries one listing may return. */
export const MAX_LIST_ENTRIES = 100_000;
const RM_DEADLINE_MS = 5 * 60_000;

export type EntryType = 'file' | 'dir' | 'symlink' | 'other';

export interface RootEntry {
  name: string;
  /** Absolute inside the root. */
  path: string;
  type: EntryType;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  atime: Date;
  mtime: Date;
  ctime: Date;
  /** Link target as stored (never resolved). */
  target?: string;
}

const typeOf = (st: Stats): EntryType => (st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other');

function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isSymbolicLink()) return 'a symbolic link (links in a volume are not followed from the host)';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

/** Split a path inside the root into components; `..`, NUL and overlong paths are refused. */
export function components(path: string): string[] {
  if (typeof path !== 'string' || !path.length) throw new CordonError('invalid_argument', 'path: a path is required');
  if (path.includes('\0')) throw new CordonError('invalid_argument', 'path: must not contain NUL bytes');
  if (path.length > 4096) throw new CordonError('invalid_argument', 'path: longer than 4096 characters');
  const parts = path.split('/').filter((c) => c !== '' && c !== '.');
  if (parts.includes('..')) throw new CordonError('invalid_argument', `path: ${path} must not contain ".."`);
  if (parts.length > MAX_DEPTH) throw new CordonError('invalid_argument', `path: nested deeper than ${MAX_DEPTH}`);
  if (parts.some((c) => Buffer.byteLength(c) > 255)) throw new CordonError('invalid_argument', 'path: a component is longer than 255 bytes');
  return parts;
}

const at = (fh: FileHandle, name?: string) => `/proc/self/fd/${fh.fd}${name === undefined ? '' : `/${name}`}`;

function mapErr(e: unknown, path: string): CordonError {
  if (e instanceof CordonError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ENOENT':
      return new CordonError('not_found', `${path} does not exist in the volume`, { path });
    case 'ELOOP':
      return new CordonError('invalid_argument', `${path} leads through a symbolic link; links in a volume are not followed from the host`, { path });
    case 'ENOTDIR':
      return new CordonError('invalid_argument', `${path}: a component of it is not a directory`, { path });
    case 'EISDIR':
      return new CordonError('invalid_argument', `${path} is a directory`, { path });
    case 'EEXIST':
      return new CordonError('already_exists', `${path} already exists in the volume`, { path });
    case 'ENOTEMPTY':
      return new CordonError('invalid_state', `${path} is a directory that is not empty`, { path });
    case 'ENOSPC':
    case 'EDQUOT':
      return new CordonError('no_space', `the volume is full writing ${path}; remove files or create a larger volume`, { path });
    case 'EROFS':
      return new CordonError('invalid_state', `the volume is read-only`, { path });
    case 'ENAMETOOLONG':
      return new CordonError('invalid_argument', `${path}: name too long`, { path });
    default:
      return new CordonError('internal', `${path}: ${(e as Error).message}`, { path });
  }
}

/** The chunks of `data`, failing when none arrives for `idleMs` (a client that stalls an upload). */
async function* idleBounded<T>(data: AsyncIterable<T> | Iterable<T>, idleMs: number, path: string): AsyncGenerator<T> {
  const it: AsyncIterator<T> | Iterator<T> = Symbol.asyncIterator in data ? data[Symbol.asyncIterator]() : data[Symbol.iterator]();
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const stalled = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new CordonError('deadline_exceeded', `the upload of ${path} sent nothing for ${idleMs / 1000}s and was abandoned`, { path })), idleMs);
    });
    try {
      const r = await Promise.race([it.next(), stalled]);
      if (r.done) return;
      yield r.value;
    } catch (e) {
      // Not awaited: a stream's iterator finishes returning only once its pending read settles.
      void Promise.resolve(it.return?.()).catch(() => {});
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * One directory tree whose content a sandbox controls, seen from the host. `root` itself is the
 * daemon's (not a sandbox's), every name below it is not.
 */
export class FilesInRoot {
  constructor(private readonly root: string) {}

  /** Run `fn` with open descriptors that are all closed afterwards, whatever happens. */
  private async scoped<T>(path: string, fn: (open: (p: string, flags: number, mode?: number) => Promise<FileHandle>) => Promise<T>): Promise<T> {
    const opened: FileHandle[] = [];
    const openTracked = async (p: string, flags: number, mode?: number) => {
      const fh = await open(p, flags, mode);
      opened.push(fh);
      return fh;
    };
    try {
      return await fn(openTracked);
    } catch (e) {
      throw mapErr(e, path);
    } finally {
      await Promise.all(opened.map((fh) => fh.close().catch(() => {})));
    }
  }

  /**
   * The O_PATH descriptor of the directory `parts` names (never through a symlink). With `create`,
   * missing directories are made (mode 0755, owned by uid/gid when given).
   */
  private async dirOf(
    openAt: (p: string, flags: number) => Promise<FileHandle>,
    parts: string[],
    create?: { uid?: number; gid?: number; mode?: number },
  ): Promise<FileHandle> {
    let dir = await openAt(this.root, O_PATH | constants.O_DIRECTORY);
    for (const [i, name] of parts.entries()) {
      const next = await openAt(at(dir, name), O_PATH | constants.O_NOFOLLOW | constants.O_DIRECTORY).catch(async (e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOTDIR' || e.code === 'ELOOP') {
          // Say which: a link (never followed from the host) or a file where a directory should be.
          const st = await lstat(at(dir, name)).catch(() => undefined);
          const where = `/${parts.slice(0, i + 1).join('/')}`;
          if (st) throw new CordonError('invalid_argument', `${where} is ${kindOf(st)}, not a directory`, { path: where });
        }
        if (e.code !== 'ENOENT' || !create) throw e;
        await mkdir(at(dir, name), { mode: create.mode ?? 0o755 }).catch((me: NodeJS.ErrnoException) => {
          if (me.code !== 'EEXIST') throw me;
        });
        const made = await openAt(at(dir, name), O_PATH | constants.O_NOFOLLOW | constants.O_DIRECTORY);
        if (create.uid !== undefined || create.gid !== undefined) await chown(at(made), create.uid ?? -1, create.gid ?? -1);
        return made;
      });
      dir = next;
    }
    return dir;
  }

  private entry(st: Stats, parts: string[], target?: string): RootEntry {
    return {
      name: parts.at(-1) ?? '',
      path: `/${parts.join('/')}`,
      type: typeOf(st),
      size: st.size,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      atime: st.atime,
      mtime: st.mtime,
      ctime: st.ctime,
      ...(target !== undefined ? { target } : {}),
    };
  }

  private async describe(dir: FileHandle, name: string, parts: string[]): Promise<RootEntry> {
    const st = await lstat(at(dir, name));
    if (!st.isSymbolicLink()) return this.entry(st, parts);
    const { readlink } = await import('node:fs/promises');
    const target = await readlink(at(dir, name)).catch(() => undefined);
    return this.entry(st, parts, target);
  }

  /** lstat: a symlink is reported as one, never followed. */
  async stat(path: string): Promise<RootEntry> {
    const parts = components(path);
    return this.scoped(path, async (openAt) => {
      if (!parts.length) {
        const root = await openAt(this.root, O_PATH | constants.O_DIRECTORY);
        return this.entry(await root.stat(), []);
      }
      const dir = await this.dirOf(openAt, parts.slice(0, -1));
      return this.describe(dir, parts.at(-1)!, parts);
    });
  }

  /** Entries below a directory to `depth` levels (symlinked directories are not entered). */
  async list(path: string, depth: number, maxEntries = MAX_LIST_ENTRIES): Promise<RootEntry[]> {
    const parts = components(path);
    return this.scoped(path, async (openAt) => {
      const top = await this.dirOf(openAt, parts);
      const out: RootEntry[] = [];
      const walk = async (dir: FileHandle, prefix: string[], level: number): Promise<void> => {
        const names = (await readdir(at(dir))).sort();
        for (const name of names) {
          const e = await this.describe(dir, name, [...prefix, name]).catch((err: NodeJS.ErrnoException) => {
            if (err.code === 'ENOENT') return undefined; // removed meanwhile
            throw err;
          });
          if (!e) continue;
          if (out.length >= maxEntries) throw new CordonError('payload_too_large', `${path} holds more than ${maxEntries} entries at depth ${depth}; list a smaller depth or a subdirectory`);
          out.push(e);
          if (e.type === 'dir' && level < depth) {
            const sub = await openAt(at(dir, name), O_PATH | constants.O_NOFOLLOW | constants.O_DIRECTORY).catch(() => undefined);
            if (sub) {
              await walk(sub, [...prefix, name], level + 1);
              await sub.close().catch(() => {});
            }
          }
        }
      };
      await walk(top, parts, 1);
      return out;
    });
  }

  /** mkdir; with parents, like mkdir -p (an existing directory is fine). */
  async mkdir(path: string, opts: { parents?: boolean; uid?: number; gid?: number; mode?: number } = {}): Promise<RootEntry> {
    const parts = components(path);
    if (!parts.length) return this.stat('/');
    return this.scoped(path, async (openAt) => {
      const owner = { uid: opts.uid, gid: opts.gid };
      const dir = await this.dirOf(openAt, parts.slice(0, -1), opts.parents ? owner : undefined);
      const name = parts.at(-1)!;
      const existed = await mkdir(at(dir, name), { mode: opts.mode ?? 0o755 }).then(
        () => false,
        (e: NodeJS.ErrnoException) => {
          if (e.code === 'EEXIST' && opts.parents) return true;
          throw e;
        },
      );
      const made = await openAt(at(dir, name), O_PATH | constants.O_NOFOLLOW | constants.O_DIRECTORY);
      if (!existed) {
        if (opts.mode !== undefined) await chmod(at(made), opts.mode);
        if (opts.uid !== undefined || opts.gid !== undefined) await chown(at(made), opts.uid ?? -1, opts.gid ?? -1);
      }
      return this.entry(await made.stat(), parts);
    });
  }

  /**
   * A read stream of a regular file. The caller gets the size; the stream holds the only descriptor
   * (closed when it ends or is destroyed).
   */
  async read(path: string, maxBytes: number): Promise<{ stream: Readable; size: number }> {
    const parts = components(path);
    if (!parts.length) throw new CordonError('invalid_argument', `${path} is a directory, not a regular file`);
    let reader: FileHandle | undefined;
    const size = await this.scoped(path, async (openAt) => {
      const dir = await this.dirOf(openAt, parts.slice(0, -1));
      const leaf = await openAt(at(dir, parts.at(-1)), O_PATH | constants.O_NOFOLLOW);
      const st = await leaf.stat();
      if (!st.isFile()) throw new CordonError('invalid_argument', `${path} is ${kindOf(st)}, not a regular file`, { path });
      if (st.size > maxBytes) throw new CordonError('payload_too_large', `${path} is larger than ${maxBytes} bytes`, { path });
      // Reopened through its own O_PATH descriptor: the very inode that was checked.
      const fh = await open(at(leaf), constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
      const again = await fh.stat().catch(() => undefined);
      if (!again || !again.isFile() || again.ino !== st.ino) {
        await fh.close().catch(() => {});
        throw new CordonError('invalid_argument', `${path} changed while it was opened; retry`, { path });
      }
      reader = fh;
      return st.size;
    });
    // Exactly the size that was checked (and announced as Content-Length): a file that grows meanwhile is cut there.
    if (size === 0) {
      await reader!.close().catch(() => {});
      return { stream: Readable.from([]), size };
    }
    const stream = createReadStream('', { fd: reader!.fd, autoClose: false, start: 0, end: size - 1, highWaterMark: 256 * 1024 });
    const close = () => void reader!.close().catch(() => {});
    stream.once('close', close);
    return { stream, size };
  }

  /**
   * Write `data` to `path`: into a new file next to it, renamed over it once complete, so nothing the
   * volume had there (a FIFO, a device node, a symlink) is ever opened, and a write that fails
   * (volume full, more than maxBytes, client gone) leaves the old file as it was.
   */
  async write(
    path: string,
    data: AsyncIterable<Buffer | Uint8Array | string> | Iterable<Buffer>,
    opts: { maxBytes: number; idleMs?: number; mode?: number; uid?: number; gid?: number; parents?: boolean },
  ): Promise<RootEntry> {
    const parts = components(path);
    if (!parts.length) throw new CordonError('invalid_argument', `${path} is a directory`);
    return this.scoped(path, async (openAt) => {
      const owner = { uid: opts.uid, gid: opts.gid };
      const dir = await this.dirOf(openAt, parts.slice(0, -1), opts.parents === false ? undefined : owner);
      const name = parts.at(-1)!;
      const existing = await lstat(at(dir, name)).catch(() => undefined);
      if (existing?.isDirectory()) throw new CordonError('invalid_argument', `${path} is a directory`, { path });
      const tmp = `.cordon-upload-${randomBytes(8).toString('hex')}`;
      const fh = await openAt(at(dir, tmp), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, opts.mode ?? 0o644);
      let done = false;
      try {
        let written = 0;
        for await (const chunk of idleBounded(data, opts.idleMs ?? 60_000, path)) {
          const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
          written += buf.length;
          if (written > opts.maxBytes) throw new CordonError('payload_too_large', `the upload is larger than ${opts.maxBytes} bytes`, { path });
          let off = 0;
          while (off < buf.length) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
        }
        if (opts.mode !== undefined) await fh.chmod(opts.mode);
        if (opts.uid !== undefined || opts.gid !== undefined) await fh.chown(opts.uid ?? -1, opts.gid ?? -1);
        await fh.sync();
        await rename(at(dir, tmp), at(dir, name));
        done = true;
        return this.entry(await fh.stat(), parts);
      } finally {
        if (!done) await unlink(at(dir, tmp)).catch(() => {});
      }
    });
  }

  /** Remove a file, a link (not what it points to) or a whole directory tree (never across a mount). */
  async remove(path: string): Promise<void> {
    const parts = components(path);
    if (!parts.length) throw new CordonError('invalid_argument', 'path: the volume root cannot be removed; remove the volume instead');
    return this.scoped(path, async (openAt) => {
      const dir = await this.dirOf(openAt, parts.slice(0, -1));
      const name = parts.at(-1)!;
      const st = await lstat(at(dir, name));
      if (!st.isDirectory()) {
        await unlink(at(dir, name));
        return;
      }
      // GNU rm walks by descriptors, never follows a link; the parent is named through our own
      // descriptor (as seen from rm's process), so nothing swapped in meanwhile redirects it.
      const r = await run('rm', ['-rf', '--one-file-system', '--', `/proc/${process.pid}/fd/${dir.fd}/${name}`], { timeoutMs: RM_DEADLINE_MS });
      if (r.code !== 0) throw new CordonError('internal', `removing ${path} failed: ${r.stderr.trim().slice(0, 500)}`, { path });
    });
  }

  /** chmod / chown of a file or directory (a symlink is refused: its target is not the host's to change). */
  async setMetadata(path: string, meta: { mode?: number; uid?: number; gid?: number }): Promise<RootEntry> {
    const parts = components(path);
    return this.scoped(path, async (openAt) => {
      const dir = await this.dirOf(openAt, parts.slice(0, -1));
      const leaf = parts.length ? await openAt(at(dir, parts.at(-1)), O_PATH | constants.O_NOFOLLOW) : dir;
      const st = await leaf.stat();
      if (st.isSymbolicLink()) throw new CordonError('invalid_argument', `${path} is ${kindOf(st)}`, { path });
      // chmod/chown of /proc/self/fd/N act on the inode the O_PATH descriptor holds.
      if (meta.mode !== undefined) await chmod(at(leaf), meta.mode & 0o7777);
      if (meta.uid !== undefined || meta.gid !== undefined) await chown(at(leaf), meta.uid ?? -1, meta.gid ?? -1);
      return this.entry(await leaf.stat(), parts);
    });
  }
}
