import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { CordonError, errors } from '../errors/registry.js';
import { HELPER_DIR } from '../runtime/oci-spec.js';
import type { ExecHandle } from '../runtime/types.js';

const BB = `${HELPER_DIR}/busybox`;

export interface FileEntry {
  name: string;
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  permissions: string;
  owner: string;
  group: string;
  modifiedAt: string;
  symlinkTarget?: string;
}

/** Runs a helper command inside the sandbox as a user; file operations never touch the host's view. */
export interface HelperExec {
  (args: string[], user: string | undefined): Promise<ExecHandle>;
}

/** Check a path from a request and make it absolute. Working inside the sandbox keeps it there. */
export function cleanPath(p: unknown, base = '/', field = 'path'): string {
  if (typeof p !== 'string' || p.length === 0) throw errors.invalid(field, 'a path is required');
  if (p.includes('\0')) throw errors.invalid(field, 'must not contain NUL bytes');
  if (p.length > 4096) throw errors.invalid(field, 'longer than 4096 characters');
  return posix.resolve(base, p);
}

async function collect(h: ExecHandle, input?: Buffer): Promise<{ code: number; out: Buffer; err: string }> {
  const out: Buffer[] = [];
  let err = '';
  h.stdout.on('data', (d: Buffer) => out.push(d));
  h.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  h.stdin.end(input ?? undefined);
  const st = await h.exited;
  await new Promise((r) => setImmediate(r));
  return { code: st.exitCode, out: Buffer.concat(out), err };
}

/** Map busybox's stderr to the error a caller can act on. */
function fsError(path: string, stderr: string): CordonError {
  const msg = stderr.trim().replace(/^\S*busybox:?\s*/i, '');
  if (/No such file|not found|nonexistent directory/i.test(msg)) return errors.fileNotFound(path);
  if (/Permission denied|Operation not permitted/i.test(msg)) return new CordonError('permission_denied', `${path}: permission denied for this user; run as another user (e.g. root)`, { path });
  if (/No space left|quota/i.test(msg)) return new CordonError('no_space', `${path}: the sandbox's disk is full; remove files or create it with a larger --disk`, { path });
  if (/Read-only file system/i.test(msg)) return new CordonError('permission_denied', `${path}: the file system is read-only; write under a tmpfs mount instead`, { path });
  if (/Is a directory/i.test(msg)) return new CordonError('invalid_argument', `${path} is a directory`, { path });
  if (/Not a directory/i.test(msg)) return new CordonError('invalid_argument', `${path}: a parent is not a directory`, { path });
  if (/File exists/i.test(msg)) return new CordonError('already_exists', `${path} already exists`, { path });
  return new CordonError('internal', `${path}: ${msg || 'file operation failed'}`, { path });
}

const STAT_FMT = '%s %f %Y %U %G %A';

function parseStat(line: string, path: string): Omit<FileEntry, 'symlinkTarget'> {
  const [size, rawMode, mtime, owner, group, perms] = line.trim().split(' ');
  const mode = parseInt(rawMode, 16);
  const fmt = mode & 0o170000;
  const type = fmt === 0o040000 ? 'dir' : fmt === 0o100000 ? 'file' : fmt === 0o120000 ? 'symlink' : 'other';
  return {
    name: posix.basename(path) || '/',
    path,
    type,
    size: Number(size),
    mode: mode & 0o7777,
    permissions: perms,
    owner,
    group,
    modifiedAt: new Date(Number(mtime) * 1000).toISOString(),
  };
}

/** File operations, each a busybox command run inside the sandbox as the requesting user. */
export class FileService {
  constructor(private readonly exec: HelperExec) {}

  /** Stat a path; symlinks are not followed unless `follow` (then a dangling one is not found). */
  async stat(path: string, user?: string, follow = false): Promise<FileEntry> {
    const r = await collect(await this.exec([BB, 'sh', '-c', `${BB} stat ${follow ? '-L ' : ''}-c '${STAT_FMT}' -- "$1" && ${BB} readlink -- "$1"; true`, 'stat', path], user));
    if (!r.out.length) throw fsError(path, r.err);
    const [line, target] = r.out.toString().split('\n');
    const e: FileEntry = parseStat(line, path);
    if (e.type === 'symlink' && target) e.symlinkTarget = target;
    return e;
  }

  async exists(path: string, user?: string): Promise<boolean> {
    try {
      await this.stat(path, user);
      return true;
    } catch (e) {
      if (e instanceof CordonError && e.code === 'not_found') return false;
      throw e;
    }
  }

  /** Entries below `path` down to `depth` levels. Names go NUL-separated so no name can confuse parsing. */
  async list(path: string, depth = 1, user?: string): Promise<FileEntry[]> {
    if (!Number.isInteger(depth) || depth < 1 || depth > 64) throw errors.invalid('depth', 'must be an integer from 1 to 64');
    const dir = await this.stat(path, user);
    if (dir.type !== 'dir') throw new CordonError('invalid_argument', `${path} is not a directory`, { path });
    const script = `cd -- "$1" || exit 1; ${BB} find . -mindepth 1 -maxdepth "$2" -print0; printf '\\0\\0'; ${BB} find . -mindepth 1 -maxdepth "$2" -exec ${BB} stat -c '${STAT_FMT}' -- {} +`;
    for (let attempt = 0; attempt < 3; attempt++) {
      const r = await collect(await this.exec([BB, 'sh', '-c', script, 'ls', path, String(depth)], user));
      if (r.code !== 0 && !r.out.length) throw fsError(path, r.err);
      const text = r.out.toString('utf8');
      const split = text.indexOf('\0\0');
      const names = (split < 0 ? '' : text.slice(0, split)).split('\0').filter(Boolean);
      // The last name's own NUL runs into the marker, so strip any NULs left before the stat lines.
      const lines = (split < 0 ? '' : text.slice(split + 2).replace(/^\0+/, '')).split('\n').filter(Boolean);
      if (lines.length !== names.length) continue; // the directory changed between the two passes
      return names.map((n, i) => parseStat(lines[i], posix.join(path, n)));
    }
    throw new CordonError('unavailable', `${path} kept changing while it was listed; try again`);
  }

  /** Stream a file's bytes out of the sandbox; errors surface before the first byte. */
  async read(path: string, user?: string): Promise<{ stream: Readable; size: number }> {
    // Follow symlinks here (cat does): a dangling one is a 404 before the first byte, not an empty 200.
    const info = await this.stat(path, user, true);
    if (info.type === 'dir') throw new CordonError('invalid_argument', `${path} is a directory; list it instead`, { path });
    const h = await this.exec([BB, 'cat', '--', path], user);
    h.stdin.end();
    let err = '';
    h.stderr?.on('data', (d: Buffer) => (err += d));
    h.exited.then((st) => {
      if (st.exitCode !== 0) h.stdout.destroy(fsError(path, err));
    });
    return { stream: h.stdout, size: info.size };
  }

  async readAll(path: string, user?: string): Promise<Buffer> {
    const { stream } = await this.read(path, user);
    const parts: Buffer[] = [];
    for await (const c of stream) parts.push(c as Buffer);
    return Buffer.concat(parts);
  }

  /** Write (or append) a stream into the sandbox, creating parent directories unless told not to. */
  async write(path: string, data: Readable | Buffer, opts: { user?: string; mode?: number; append?: boolean; parents?: boolean } = {}): Promise<FileEntry> {
    const mode = opts.mode === undefined ? '' : (opts.mode & 0o7777).toString(8);
    const script = [
      'set -e',
      `if [ "$3" = 1 ]; then ${BB} mkdir -p -- "$(${BB} dirname -- "$1")"; fi`,
      `if [ "$4" = 1 ]; then ${BB} cat >> "$1"; else ${BB} cat > "$1"; fi`,
      `if [ -n "$2" ]; then ${BB} chmod "$2" -- "$1"; fi`,
    ].join('\n');
    const h = await this.exec([BB, 'sh', '-c', script, 'write', path, mode, opts.parents === false ? '0' : '1', opts.append ? '1' : '0'], opts.user);
    let err = '';
    h.stderr?.on('data', (d: Buffer) => (err += d));
    h.stdout.resume();
    if (Buffer.isBuffer(data)) h.stdin.end(data);
    else {
      data.on('error', () => h.stdin.destroy());
      data.pipe(h.stdin);
    }
    const st = await h.exited;
    if (st.exitCode !== 0) throw fsError(path, err);
    return this.stat(path, opts.user);
  }

  async mkdir(path: string, user?: string): Promise<FileEntry> {
    await this.simple([BB, 'mkdir', '-p', '--', path], path, user);
    return this.stat(path, user);
  }

  async move(from: string, to: string, user?: string): Promise<FileEntry> {
    await this.stat(from, user);
    await this.simple([BB, 'mv', '-f', '--', from, to], from, user);
    return this.stat(to, user);
  }

  async remove(path: string, user?: string, recursive = true): Promise<void> {
    if (path === '/') throw errors.invalid('path', 'refusing to remove /');
    await this.stat(path, user);
    await this.simple([BB, 'rm', recursive ? '-rf' : '-f', '--', path], path, user);
  }

  private async simple(args: string[], path: string, user?: string): Promise<void> {
    const r = await collect(await this.exec(args, user));
    if (r.code !== 0) throw fsError(path, r.err);
  }
}
