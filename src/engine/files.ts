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
  /** mtime in whole seconds, and the nanoseconds within it where the agent reports them (change detection). */
  mtimeSec?: number;
  mtimeNs?: number;
  /** The link's own text, as readlink prints it. */
  symlinkTarget?: string;
  /** For a symlink whose target exists: the target's absolute path (all links resolved), type and mode. */
  resolved?: { path: string; type: 'file' | 'dir' | 'other'; mode: number };
  /** st_mode as the kernel reports it (type and permission bits). */
  rawMode: number;
}

/** Runs a helper command inside the sandbox as a user; file operations never touch the host's view. */
export interface HelperExec {
  (args: string[], user: string | undefined): Promise<ExecHandle>;
}

/** Numeric ids of a user inside the sandbox (for handing directories made by root to that user). */
export type OwnerOf = (user: string | undefined) => Promise<{ uid: number; gid: number }>;

/** Check a path from a request and make it absolute. Working inside the sandbox keeps it there. */
export function cleanPath(p: unknown, base = '/', field = 'path'): string {
  if (typeof p !== 'string' || p.length === 0) throw errors.invalid(field, 'a path is required');
  if (p.includes('\0')) throw errors.invalid(field, 'must not contain NUL bytes');
  if (p.length > 4096) throw errors.invalid(field, 'longer than 4096 characters');
  return posix.resolve(base, p);
}

/** stderr kept from a helper: enough for its message, never what a hostile tree could make it print. */
const MAX_HELPER_STDERR = 64 * 1024;
/** Most output a listing helper may print; past it the helper is killed and the listing refused. */
export const MAX_LISTING_BYTES = 64 * 1024 * 1024;

class OutputTooLarge extends Error {}

/** A helper's output; past `maxOut` bytes of stdout it is killed and OutputTooLarge is thrown. */
async function collect(h: ExecHandle, input?: Buffer, maxOut = Infinity): Promise<{ code: number; out: Buffer; err: string }> {
  const out: Buffer[] = [];
  let outLen = 0;
  let err = '';
  let tooLarge = false;
  h.stdout.on('data', (d: Buffer) => {
    if (tooLarge) return;
    outLen += d.length;
    if (outLen <= maxOut) return void out.push(d);
    tooLarge = true;
    out.length = 0;
    h.signal('SIGKILL').catch(() => {});
  });
  h.stderr?.on('data', (d: Buffer) => err.length < MAX_HELPER_STDERR && (err += d.toString()));
  h.stdin.end(input ?? undefined);
  const st = await h.exited;
  await new Promise((r) => setImmediate(r));
  if (tooLarge) throw new OutputTooLarge();
  return { code: st.exitCode, out: Buffer.concat(out), err };
}

/** A FIFO, socket or device: reading or writing one through the API would block or touch a device. */
const notRegular = (path: string) =>
  new CordonError('invalid_argument', `${path} is not a regular file (a FIFO, socket or device); only regular files can be read or written through the API`, { path });

/** Map busybox's stderr to the error a caller can act on. */
function fsError(path: string, stderr: string): CordonError {
  const msg = stderr.trim().replace(/^\S*busybox:?\s*/i, '');
  if (/No such file|not found|nonexistent directory/i.test(msg)) return errors.fileNotFound(path);
  if (/Permission denied|Operation not permitted/i.test(msg)) return new CordonError('permission_denied', `${path}: permission denied for this user; run as another user (e.g. root)`, { path });
  if (/No space left|quota/i.test(msg)) return new CordonError('no_space', `${path}: the sandbox's disk is full; remove files or create it with a larger --disk`, { path });
  if (/Read-only file system/i.test(msg)) return new CordonError('permission_denied', `${path}: the file system is read-only; write under a tmpfs mount instead`, { path });
  if (/not a regular file/i.test(msg)) return notRegular(path);
  if (/Is a directory/i.test(msg)) return new CordonError('invalid_argument', `${path} is a directory`, { path });
  if (/Not a directory/i.test(msg)) return new CordonError('invalid_argument', `${path}: a parent is not a directory`, { path });
  if (/File exists/i.test(msg)) return new CordonError('already_exists', `${path} already exists`, { path });
  return new CordonError('internal', `${path}: ${msg || 'file operation failed'}`, { path });
}

const STAT_FMT = '%s %f %Y %U %G %A';

const TYPE_OF_FMT: Record<number, FileEntry['type']> = { 0o040000: 'dir', 0o100000: 'file', 0o120000: 'symlink' };
const typeOf = (rawMode: number): FileEntry['type'] => TYPE_OF_FMT[rawMode & 0o170000] ?? 'other';

function parseStat(line: string, path: string): FileEntry {
  const [size, rawMode, mtime, owner, group, perms] = line.trim().split(' ');
  const mode = parseInt(rawMode, 16);
  return {
    name: posix.basename(path) || '/',
    path,
    type: typeOf(mode),
    size: Number(size),
    mode: mode & 0o7777,
    rawMode: mode,
    permissions: perms,
    owner,
    group,
    modifiedAt: new Date(Number(mtime) * 1000).toISOString(),
  };
}

/**
 * For each symlink in "$@": its text, then (when the target exists) the fully resolved absolute
 * target and the target's st_mode, each NUL-terminated; an empty field when the target is missing.
 */
const LINKS_SCRIPT = `for p; do l=$(${BB} readlink -- "$p"); printf '%s\\0' "$l"; t=$(${BB} readlink -f -- "$p") && [ -e "$t" ] && printf '%s\\0%s\\0' "$t" "$(${BB} stat -L -c %f -- "$t")" || printf '\\0\\0'; done`;
const LINKS_PER_CALL = 256;

/** WalkDir order (Go's filepath.WalkDir, which envd lists in): depth first, names in byte order. */
function walkOrder(a: string, b: string): number {
  const pa = a.split('/');
  const pb = b.split('/');
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const c = Buffer.compare(Buffer.from(pa[i]), Buffer.from(pb[i]));
    if (c) return c;
  }
  return pa.length - pb.length;
}

/** File operations, each a busybox command run inside the sandbox as the requesting user. */
export class FileService {
  constructor(
    private readonly exec: HelperExec,
    private readonly ownerOf: OwnerOf,
  ) {}

  /** Stat a path; symlinks are not followed unless `follow` (then a dangling one is not found). */
  async stat(path: string, user?: string, follow = false): Promise<FileEntry> {
    const r = await collect(await this.exec([BB, 'stat', ...(follow ? ['-L'] : []), '-c', STAT_FMT, '--', path], user));
    if (r.code !== 0 || !r.out.length) throw fsError(path, r.err);
    const e = parseStat(r.out.toString(), path);
    if (e.type === 'symlink') await this.resolveLinks([e], user);
    return e;
  }

  /** Fill in symlinkTarget and resolved for symlink entries, in a few helper calls however many there are. */
  private async resolveLinks(entries: FileEntry[], user?: string): Promise<void> {
    for (let i = 0; i < entries.length; i += LINKS_PER_CALL) {
      const batch = entries.slice(i, i + LINKS_PER_CALL);
      const r = await collect(await this.exec([BB, 'sh', '-c', LINKS_SCRIPT, 'links', ...batch.map((e) => e.path)], user));
      const fields = r.out.toString('utf8').split('\0');
      batch.forEach((e, j) => {
        const [text, target, hexMode] = fields.slice(j * 3, j * 3 + 3);
        if (text) e.symlinkTarget = text;
        if (target && hexMode) {
          const mode = parseInt(hexMode, 16);
          const type = typeOf(mode);
          e.resolved = { path: target, type: type === 'symlink' ? 'other' : type, mode: mode & 0o7777 };
        }
      });
    }
  }

  /**
   * Entries below `path` down to `depth` levels, in WalkDir order. A symlink to a directory is listed
   * as that directory. Names go NUL-separated so no name can confuse parsing.
   */
  async list(path: string, depth = 1, user?: string): Promise<FileEntry[]> {
    if (!Number.isInteger(depth) || depth < 1 || depth > 64) throw errors.invalid('depth', 'must be an integer from 1 to 64');
    const dir = await this.stat(path, user, true);
    if (dir.type !== 'dir') throw new CordonError('invalid_argument', `${path} is not a directory`, { path });
    const script = `cd -- "$1" || exit 1; ${BB} find . -mindepth 1 -maxdepth "$2" -print0; printf '\\0\\0'; ${BB} find . -mindepth 1 -maxdepth "$2" -exec ${BB} stat -c '${STAT_FMT}' -- {} +`;
    for (let attempt = 0; attempt < 3; attempt++) {
      const r = await collect(await this.exec([BB, 'sh', '-c', script, 'ls', path, String(depth)], user), undefined, MAX_LISTING_BYTES).catch((e: unknown) => {
        if (!(e instanceof OutputTooLarge)) throw e;
        throw new CordonError('payload_too_large', `listing ${path} to depth ${depth} is larger than ${MAX_LISTING_BYTES / 1024 / 1024} MiB; list a narrower directory or use a smaller depth`, { path });
      });
      if (r.code !== 0 && !r.out.length) throw fsError(path, r.err);
      const text = r.out.toString('utf8');
      const split = text.indexOf('\0\0');
      const names = (split < 0 ? '' : text.slice(0, split)).split('\0').filter(Boolean);
      // The last name's own NUL runs into the marker, so strip any NULs left before the stat lines.
      const lines = (split < 0 ? '' : text.slice(split + 2).replace(/^\0+/, '')).split('\n').filter(Boolean);
      if (lines.length !== names.length) continue; // the directory changed between the two passes
      const entries = names.map((n, i) => parseStat(lines[i], posix.join(path, n))).sort((a, b) => walkOrder(a.path, b.path));
      await this.resolveLinks(entries.filter((e) => e.type === 'symlink'), user);
      return entries;
    }
    throw new CordonError('unavailable', `${path} kept changing while it was listed; try again`);
  }

  /** Stream a file's bytes out of the sandbox; errors surface before the first byte. */
  async read(path: string, user?: string): Promise<{ stream: Readable; size: number }> {
    // Follow symlinks here (cat does): a dangling one is a 404 before the first byte, not an empty 200.
    const info = await this.stat(path, user, true);
    if (info.type === 'dir') throw new CordonError('invalid_argument', `${path} is a directory; list it instead`, { path });
    if (info.type !== 'file') throw notRegular(path);
    const h = await this.exec([BB, 'cat', '--', path], user);
    h.stdin.end();
    let err = '';
    let exited = false;
    h.stderr?.on('data', (d: Buffer) => err.length < MAX_HELPER_STDERR && (err += d));
    h.exited.then((st) => {
      exited = true;
      if (st.exitCode !== 0) h.stdout.destroy(fsError(path, err));
    });
    // A reader that leaves early (client gone, cut off for stalling) takes the helper with it; else it
    // would block for ever on the full pipe, or on a FIFO swapped in after the check above.
    h.stdout.once('close', () => {
      if (!exited && !h.stdout.readableEnded) h.signal('SIGKILL').catch(() => {});
    });
    return { stream: h.stdout, size: info.size };
  }

  async readAll(path: string, user?: string): Promise<Buffer> {
    const { stream } = await this.read(path, user);
    const parts: Buffer[] = [];
    for await (const c of stream) parts.push(c as Buffer);
    return Buffer.concat(parts);
  }

  /**
   * Write (or append) a stream into the sandbox, creating parent directories unless told not to.
   * With `ownParents`, parents the user may not create (e.g. at the top level) are made by root and
   * handed to the user, as envd does. The data is only consumed once the destination is ready, so
   * that fallback never loses bytes.
   */
  async write(path: string, data: Readable | Buffer, opts: { user?: string; mode?: number; append?: boolean; parents?: boolean; ownParents?: boolean } = {}): Promise<FileEntry> {
    const mode = opts.mode === undefined ? '' : (opts.mode & 0o7777).toString(8);
    const script = [
      `d=$(${BB} dirname -- "$1")`,
      `if [ "$3" = 1 ] && [ ! -d "$d" ] && ! ${BB} mkdir -p -- "$d"; then [ "$5" = 1 ] && echo P && exit 0; exit 1; fi`,
      // Opening a FIFO would block the helper (and the upload) until something inside reads it.
      'if [ -e "$1" ] && [ ! -f "$1" ] && [ ! -d "$1" ]; then echo "$1: not a regular file" >&2; exit 1; fi',
      'echo R',
      `if [ "$4" = 1 ]; then ${BB} cat >> "$1"; else ${BB} cat > "$1"; fi || exit 1`,
      `if [ -n "$2" ]; then ${BB} chmod "$2" -- "$1"; fi`,
    ].join('\n');
    const args = [BB, 'sh', '-c', script, 'write', path, mode, opts.parents === false ? '0' : '1', opts.append ? '1' : '0', opts.ownParents ? '1' : '0'];
    // A failing source (client gone, upload limit) must not leave the helper waiting for input.
    let failed: Error | undefined;
    let onFail = () => {};
    if (!Buffer.isBuffer(data)) {
      data.on('error', (e) => {
        failed ??= e;
        onFail();
      });
    }
    const h = await this.exec(args, opts.user);
    let err = '';
    h.stderr?.on('data', (d: Buffer) => err.length < MAX_HELPER_STDERR && (err += d));
    const ready = await firstLine(h.stdout);
    h.stdout.resume();
    if (ready === 'P') {
      h.stdin.end();
      await h.exited;
      await this.ensureDirs(posix.dirname(path), opts.user);
      return this.write(path, data, { ...opts, ownParents: false });
    }
    if (ready !== 'R') {
      h.stdin.end();
      await h.exited;
      throw fsError(path, err);
    }
    if (Buffer.isBuffer(data)) h.stdin.end(data);
    else {
      onFail = () => {
        h.stdin.end();
        h.signal('SIGKILL').catch(() => {});
      };
      if (failed) onFail();
      else data.pipe(h.stdin);
    }
    const st = await h.exited;
    if (failed) throw failed instanceof CordonError ? failed : new CordonError('invalid_argument', `${path}: the data stream failed: ${failed.message}`, { path });
    if (st.exitCode !== 0) throw fsError(path, err);
    return this.stat(path, opts.user);
  }

  /** mkdir -p as the user; with `ownParents`, what the user may not create is made by root and handed over. */
  async mkdir(path: string, user?: string, opts: { ownParents?: boolean } = {}): Promise<FileEntry> {
    const r = await collect(await this.exec([BB, 'mkdir', '-p', '--', path], user));
    if (r.code !== 0) {
      const e = fsError(path, r.err);
      if (!opts.ownParents || e.code !== 'permission_denied') throw e;
      await this.ensureDirs(path, user);
    }
    return this.stat(path, user);
  }

  /**
   * envd's EnsureDirs: as root, create each missing component of `dir` (mode 0755) and give it to
   * the user; an existing component that is not a directory is an error.
   */
  private async ensureDirs(dir: string, user?: string): Promise<void> {
    const { uid, gid } = await this.ownerOf(user);
    const script = [
      'set -f; p=; IFS=/',
      'for c in $1; do',
      '  [ -n "$c" ] || continue; p="$p/$c"',
      `  if [ ! -e "$p" ]; then ${BB} mkdir -m 755 -- "$p" && ${BB} chown "$2" -- "$p" || exit 1`,
      `  elif [ ! -d "$p" ]; then echo "$p: Not a directory" >&2; exit 1; fi`,
      'done',
    ].join('\n');
    const r = await collect(await this.exec([BB, 'sh', '-c', script, 'ensure-dirs', dir, `${uid}:${gid}`], 'root'));
    if (r.code !== 0) throw fsError(dir, r.err);
  }

  async move(from: string, to: string, user?: string): Promise<FileEntry> {
    await this.stat(from, user);
    await this.simple([BB, 'mv', '-f', '--', from, to], from, user);
    return this.stat(to, user);
  }

  /** Remove a path; with `missingOk` a path that does not exist is not an error (envd's RemoveAll). */
  async remove(path: string, user?: string, recursive = true, missingOk = false): Promise<void> {
    if (path === '/') throw errors.invalid('path', 'refusing to remove /');
    if (!missingOk) await this.stat(path, user);
    await this.simple([BB, 'rm', recursive ? '-rf' : '-f', '--', path], path, user);
  }

  async chmod(path: string, mode: number, user?: string): Promise<FileEntry> {
    await this.simple([BB, 'chmod', (mode & 0o7777).toString(8), '--', path], path, user);
    return this.stat(path, user);
  }

  async chown(path: string, owner: { uid?: number; gid?: number }, user?: string): Promise<FileEntry> {
    const spec = `${owner.uid ?? ''}${owner.gid !== undefined ? `:${owner.gid}` : ''}`;
    if (spec) await this.simple([BB, 'chown', spec, '--', path], path, user);
    return this.stat(path, user);
  }

  private async simple(args: string[], path: string, user?: string): Promise<void> {
    const r = await collect(await this.exec(args, user));
    if (r.code !== 0) throw fsError(path, r.err);
  }
}

/** The first line a helper prints (its readiness word), or undefined if it ends without one. */
function firstLine(out: Readable): Promise<string | undefined> {
  return new Promise((resolve) => {
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString();
      const i = buf.indexOf('\n');
      if (i < 0) return;
      done(buf.slice(0, i));
    };
    const done = (line: string | undefined) => {
      out.off('data', onData);
      out.off('end', onEnd);
      out.pause();
      resolve(line);
    };
    const onEnd = () => done(undefined);
    out.on('data', onData);
    out.on('end', onEnd);
  });
}
