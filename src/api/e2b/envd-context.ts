import type { IncomingHttpHeaders } from 'node:http';
import { z } from 'zod';
import { cleanPath, type FileEntry } from '../../engine/files.js';
import type { LiveSandbox } from '../../engine/live-sandbox.js';
import { RpcError } from './connect.js';

/** E2B's default user inside a sandbox when the template chose none; without it, the sandbox's own default. */
export const E2B_USER = 'user';
export const ENVD_PORT = 49983;
/** The envd version we claim: >= 0.6.4 unlocks every feature the 2.x SDK gates on. */
export const ENVD_VERSION = '0.6.4';

const userName = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/, 'a user name or uid');

/** envd takes the user from `Authorization: Basic base64("user:")`. */
export function userFromAuthorization(h: IncomingHttpHeaders): string | undefined {
  const auth = h.authorization;
  if (typeof auth !== 'string' || !/^Basic /i.test(auth)) return undefined;
  const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
  const name = decoded.split(':')[0];
  if (!name) return undefined;
  const ok = userName.safeParse(name);
  if (!ok.success) throw new RpcError('invalid_argument', `Authorization: user "${name}" is not a valid user name`);
  return name;
}

export interface EnvdUser {
  name: string;
  home: string;
}

/**
 * The caller's user: the one named in the request (Authorization, ?username=) as given; else, as E2B's
 * default, the template's last USER (SDK setUser, Dockerfile USER) or the create's user; else `user`
 * when the sandbox has it; else the sandbox's default (root).
 */
export async function resolveEnvdUser(live: LiveSandbox, requested: string | undefined): Promise<EnvdUser> {
  const name = requested ?? live.chosenUser();
  if (name !== undefined) {
    const u = await live.resolveUser(name);
    return { name: u.name, home: u.home };
  }
  try {
    const u = await live.resolveUser(E2B_USER);
    return { name: u.name, home: u.home };
  } catch {
    const u = await live.resolveUser();
    return { name: u.name, home: u.home };
  }
}

/**
 * Where envd starts a command given no cwd: the template's last WORKDIR (E2B's defaultWorkdir), else the
 * user's home. The home also when no step of an E2B template set a workdir (its build's /home/user is
 * not one), and for `/`, the image default (cordon's base has it; E2B's own base starts in the home).
 */
export function envdWorkdir(live: LiveSandbox, user: EnvdUser): string {
  if (live.workdirIsHome()) return user.home;
  const w = live.workdir();
  return w && w !== '/' && w.startsWith('/') ? w : user.home;
}

/** envd resolves relative paths (and "~") against the user's home. */
export function envdPath(p: unknown, home: string, field = 'path'): string {
  if (typeof p === 'string' && (p === '~' || p.startsWith('~/'))) p = home + p.slice(1);
  return cleanPath(p, home, field);
}

/** Per-sandbox file metadata set with X-Metadata-* on upload (kept in memory, keyed by path). */
export class FileMetadata {
  private readonly bySandbox = new Map<string, Map<string, Record<string, string>>>();
  get(sandboxId: string, path: string): Record<string, string> | undefined {
    return this.bySandbox.get(sandboxId)?.get(path);
  }
  set(sandboxId: string, path: string, meta: Record<string, string> | undefined): void {
    let m = this.bySandbox.get(sandboxId);
    if (!m) this.bySandbox.set(sandboxId, (m = new Map()));
    if (meta && Object.keys(meta).length) m.set(path, meta);
    else m.delete(path);
  }
  /** Follow a move or removal of a path and everything below it. */
  rebase(sandboxId: string, from: string, to: string | undefined): void {
    const m = this.bySandbox.get(sandboxId);
    if (!m) return;
    for (const [p, v] of [...m]) {
      if (p !== from && !p.startsWith(from + '/')) continue;
      m.delete(p);
      if (to !== undefined) m.set(to + p.slice(from.length), v);
    }
  }
  forget(sandboxId: string): void {
    this.bySandbox.delete(sandboxId);
  }
}

const FILE_TYPE = { file: 'FILE_TYPE_FILE', dir: 'FILE_TYPE_DIRECTORY', symlink: 'FILE_TYPE_SYMLINK', other: 'FILE_TYPE_UNSPECIFIED' } as const;

/** Go's os.FileMode.String() of an lstat mode, which envd reports as `permissions` ("drwxr-xr-x", "Lrwxrwxrwx"). */
export function goPermissions(rawMode: number): string {
  const fmt = rawMode & 0o170000;
  let s = '';
  if (fmt === 0o040000) s += 'd';
  if (fmt === 0o120000) s += 'L';
  if (fmt === 0o060000 || fmt === 0o020000) s += 'D';
  if (fmt === 0o010000) s += 'p';
  if (fmt === 0o140000) s += 'S';
  if (rawMode & 0o4000) s += 'u';
  if (rawMode & 0o2000) s += 'g';
  if (fmt === 0o020000) s += 'c';
  if (rawMode & 0o1000) s += 't';
  if (!s) s = '-';
  const rwx = 'rwxrwxrwx';
  for (let i = 0; i < 9; i++) s += rawMode & (1 << (8 - i)) ? rwx[i] : '-';
  return s;
}

/**
 * A FileEntry as filesystem.EntryInfo in proto3 JSON (int64 as string, enum names, RFC 3339), the way
 * envd builds it: `mode` holds only the permission bits; a symlink reports its target's type and
 * permissions and the target's absolute path (its own path when the target does not exist).
 */
export function entryInfo(e: FileEntry, metadata?: Record<string, string>) {
  const link = e.type === 'symlink';
  const target = link ? e.resolved : undefined;
  return {
    name: e.name,
    type: link ? (target ? FILE_TYPE[target.type] : FILE_TYPE.other) : FILE_TYPE[e.type],
    path: e.path,
    size: String(e.size),
    mode: link ? (target ? target.mode & 0o777 : 0) : e.mode & 0o777,
    permissions: goPermissions(e.rawMode),
    owner: e.owner,
    group: e.group,
    modifiedTime: e.modifiedAt,
    ...(link ? { symlinkTarget: target?.path ?? e.path } : {}),
    ...(metadata ? { metadata } : {}),
  };
}

/** Validate a request message; failures become invalid_argument naming the field. */
export function parseMsg<T extends z.ZodTypeAny>(schema: T, msg: unknown, what: string): z.infer<T> {
  // proto3 JSON accepts the original field names too; only top-level request fields have underscores.
  if (msg && typeof msg === 'object' && !Array.isArray(msg)) {
    msg = Object.fromEntries(Object.entries(msg).map(([k, v]) => [k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()), v]));
  }
  const r = schema.safeParse(msg);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new RpcError('invalid_argument', `${what}.${i?.path.join('.') || '(message)'}: ${i?.message}`);
  }
  return r.data;
}
