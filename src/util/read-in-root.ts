import { closeSync, constants, fstatSync, lstatSync, openSync, readlinkSync, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

// Reads a file of a sandbox's (or an image's) root filesystem from the host without ever leaving that
// root and without ever blocking on what is there. The path is walked one component at a time through
// O_PATH descriptors, each opened as /proc/self/fd/<dir>/<name>: the kernel looks the name up inside
// the directory that descriptor already holds, so a directory swapped for a symlink after we looked
// at it cannot redirect the walk. Symlinks are never followed by the kernel; they are resolved here,
// inside the root (an absolute target restarts at the root, `..` stops at it). Nothing but a regular
// file is ever opened for reading, and it is reopened through its own O_PATH descriptor, so the bytes
// read are those of the very inode that was checked (a FIFO or device put there never gets opened).

/** Linux's O_PATH (the same value on x86-64 and arm64); node:fs does not export it. */
const O_PATH = 0o10000000;
const MAX_LINKS = 40;
const MAX_STEPS = 4096;
const MAX_DEPTH = 256;

export type InRootProblem = 'missing' | 'not-regular' | 'too-large' | 'not-directory' | 'too-many-links' | 'unreadable' | 'runtime-mount';

export class InRootError extends Error {
  constructor(readonly problem: InRootProblem, message: string) {
    super(message);
  }
}

export interface InRootFile {
  /** Where the file really is inside the root: absolute, symlinks resolved, no `.` or `..`. */
  path: string;
  data: Buffer;
  /** What the file was when it was read (compare with statInRoot to know whether it changed). */
  stamp: InRootStamp;
}

function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'not a regular file';
}

export interface InRootOptions {
  /**
   * Top-level directories (e.g. "/proc") the runtime mounts over inside the sandbox: a path leading
   * through one of them here does not lead to the same file in there, so it is refused.
   */
  refuseUnder?: string[];
}

/** The regular file a walk ended at: its O_PATH descriptor (the caller closes it) and what it is. */
interface InRootLeaf {
  fd: number;
  st: Stats;
  path: string;
}

/**
 * Walk `path` inside `root` to a regular file, one O_PATH descriptor at a time (see above). Only
 * metadata calls (O_PATH opens, fstat, readlink) that never block on what the sandbox put there, so
 * they run synchronously: a walk is a few microseconds, where one thread-pool hop per call would cost
 * more than the work. Throws InRootError as readFileInRoot does.
 */
function walkInRoot(root: string, path: string, maxBytes: number, opts: InRootOptions): InRootLeaf {
  const opened = new Set<number>();
  const openPath = (p: string, flags: number) => {
    const fd = openSync(p, flags);
    opened.add(fd);
    return fd;
  };
  const close = (fd: number) => {
    opened.delete(fd);
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
  };
  const fail = (problem: InRootProblem, why: string) => new InRootError(problem, `${path} in the sandbox ${why}`);
  let leaf: InRootLeaf | undefined;
  try {
    const rootFd = openPath(root, O_PATH | constants.O_DIRECTORY);
    const dirs: { fd: number; name: string }[] = [];
    const queue = path.split('/');
    let links = 0;
    let steps = 0;
    let found: { fd: number; st: Stats; name: string } | undefined;
    while (queue.length) {
      if (++steps > MAX_STEPS) throw fail('unreadable', 'has too many path components');
      const name = queue.shift()!;
      if (name === '' || name === '.') continue;
      if (name === '..') {
        const up = dirs.pop();
        if (up) close(up.fd);
        continue;
      }
      const at = `/proc/self/fd/${dirs.at(-1)?.fd ?? rootFd}/${name}`;
      let fd: number;
      try {
        fd = openPath(at, O_PATH | constants.O_NOFOLLOW);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') throw fail('missing', 'does not exist');
        throw fail('unreadable', `cannot be reached (${code ?? (e as Error).message})`);
      }
      const st = fstatSync(fd);
      if (st.isSymbolicLink()) {
        close(fd);
        if (++links > MAX_LINKS) throw fail('too-many-links', 'goes through too many symbolic links');
        // Read by name: an O_PATH descriptor of a symlink cannot be read through node:fs. If the name
        // changed in between, look it up again (the link budget bounds the retries).
        let target: string | undefined;
        try {
          target = readlinkSync(at);
        } catch {
          target = undefined;
        }
        if (target === undefined) {
          queue.unshift(name);
          continue;
        }
        if (target.startsWith('/')) while (dirs.length) close(dirs.pop()!.fd);
        queue.unshift(...target.split('/'));
      } else if (st.isDirectory()) {
        if (dirs.length >= MAX_DEPTH) throw fail('unreadable', 'is nested too deeply');
        if (!dirs.length && opts.refuseUnder?.includes(`/${name}`)) throw fail('runtime-mount', `leads into /${name}, which the runtime mounts over`);
        dirs.push({ fd, name });
      } else {
        if (queue.length) throw fail('not-directory', `cannot be reached: ${name} is not a directory`);
        found = { fd, st, name };
      }
    }
    if (!found) throw fail('not-regular', 'is a directory, not a regular file');
    if (!found.st.isFile()) throw fail('not-regular', `is ${kindOf(found.st)}, not a regular file`);
    if (found.st.size > maxBytes) throw fail('too-large', `is larger than ${maxBytes} bytes`);
    leaf = { fd: found.fd, st: found.st, path: `/${[...dirs.map((d) => d.name), found.name].join('/')}` };
    opened.delete(found.fd);
    return leaf;
  } finally {
    for (const fd of opened) close(fd);
  }
}

/**
 * What identifies the current content of `path` inside `root` without reading it: where it really
 * is, its inode, size and change times. Throws InRootError as readFileInRoot does.
 */
export function statInRoot(root: string, path: string, maxBytes: number, opts: InRootOptions = {}): InRootStamp {
  const leaf = walkInRoot(root, path, maxBytes, opts);
  closeSync(leaf.fd);
  return stampOf(leaf.path, leaf.st);
}

/**
 * The stamps statInRoot would give for regular files that sit directly in a directory `dir` at the top
 * of `root` (e.g. etc: passwd, group), in a few calls: that directory opened without following a
 * symlink, each name looked at with lstat inside it (nothing is opened). A name that is anything but a
 * regular file there (missing, a symlink, a FIFO) gets undefined, as do all of them when `dir` is not a
 * plain directory: the caller then walks with statInRoot, which resolves what is there. `root` is the
 * host's own path; only the names under it are the sandbox's.
 */
export function stampsInTopDir(root: string, dir: string, names: string[]): (InRootStamp | undefined)[] {
  for (const c of [dir, ...names]) if (!/^[^/\0]+$/.test(c) || c === '.' || c === '..') throw new Error(`stampsInTopDir: ${c} is not one path component`);
  let fd: number;
  try {
    fd = openSync(`${root}/${dir}`, O_PATH | constants.O_NOFOLLOW | constants.O_DIRECTORY);
  } catch {
    return names.map(() => undefined);
  }
  try {
    return names.map((name) => {
      const st = lstatSync(`/proc/self/fd/${fd}/${name}`, { throwIfNoEntry: false });
      return st?.isFile() ? stampOf(`/${dir}/${name}`, st) : undefined;
    });
  } catch {
    return names.map(() => undefined);
  } finally {
    closeSync(fd);
  }
}

export interface InRootStamp {
  /** Equal stamps: the same file, unchanged (see changedAtMs for writes too close together to tell). */
  key: string;
  /** The file's last change (ctime), in ms since the epoch. */
  changedAtMs: number;
}

function stampOf(path: string, st: Stats): InRootStamp {
  return { key: `${path}\0${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`, changedAtMs: st.ctimeMs };
}

/**
 * The content of `path` (read as if `root` were `/`), at most `maxBytes` long, and the stamp of the
 * file that was read. Throws InRootError when the file is missing, is not a regular file, is larger
 * than `maxBytes` or cannot be reached.
 */
export async function readFileInRoot(root: string, path: string, maxBytes: number, opts: InRootOptions = {}): Promise<InRootFile> {
  const leaf = walkInRoot(root, path, maxBytes, opts);
  let reader: FileHandle | undefined;
  try {
    reader = await open(`/proc/self/fd/${leaf.fd}`, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
    const data = await readCapped(reader, maxBytes);
    if (data === undefined) throw new InRootError('too-large', `${path} in the sandbox is larger than ${maxBytes} bytes`);
    return { path: leaf.path, data, stamp: stampOf(leaf.path, leaf.st) };
  } finally {
    closeSync(leaf.fd);
    await reader?.close().catch(() => {});
  }
}

/** Up to `max` bytes; undefined when the file holds more (it may have grown since it was checked). */
async function readCapped(fh: FileHandle, max: number): Promise<Buffer | undefined> {
  const buf = Buffer.alloc(Math.min(max + 1, 64 * 1024));
  const chunks: Buffer[] = [];
  let total = 0;
  for (;;) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, max + 1 - total), null);
    if (bytesRead === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, bytesRead)));
    total += bytesRead;
    if (total > max) return undefined;
  }
  return Buffer.concat(chunks, total);
}
