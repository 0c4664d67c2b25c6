// The agent's file entries and errnos in the daemon's terms: a FileEntry as the exec path builds it
// (ls-style permissions, a symlink's resolved target), and each errno as the exec path words it.
import { posix } from 'node:path';
import { CordonError, errors } from '../../errors/registry.js';
import type { FileEntry } from '../files.js';
import { AgentOpError } from './connection-types.js';
import type { AgentEntry } from './messages.js';

/** Entries one listing may return. */
export const MAX_LIST_ENTRIES = 100_000;

const TYPE_OF_FMT: Record<number, FileEntry['type']> = { 0o040000: 'dir', 0o100000: 'file', 0o120000: 'symlink' };
const typeOf = (rawMode: number): FileEntry['type'] => TYPE_OF_FMT[rawMode & 0o170000] ?? 'other';

/** ls-style permissions (what `stat -c %A` prints): type, then rwx with s/S/t/T. */
export function lsPermissions(mode: number): string {
  const types: Record<number, string> = { 0o040000: 'd', 0o120000: 'l', 0o020000: 'c', 0o060000: 'b', 0o010000: 'p', 0o140000: 's' };
  let s = types[mode & 0o170000] ?? '-';
  const bit = (m: number, c: string) => (mode & m ? c : '-');
  const special = (x: number, sp: number, on: string) => (mode & sp ? (mode & x ? on : on.toUpperCase()) : mode & x ? 'x' : '-');
  s += bit(0o400, 'r') + bit(0o200, 'w') + special(0o100, 0o4000, 's');
  s += bit(0o040, 'r') + bit(0o020, 'w') + special(0o010, 0o2000, 's');
  s += bit(0o004, 'r') + bit(0o002, 'w') + special(0o001, 0o1000, 't');
  return s;
}

export function toFileEntry(e: AgentEntry): FileEntry {
  const out: FileEntry = {
    name: posix.basename(e.path) || '/',
    path: e.path,
    type: e.type,
    size: e.size,
    mode: e.mode & 0o7777,
    rawMode: e.mode,
    permissions: lsPermissions(e.mode),
    owner: e.owner,
    group: e.group,
    modifiedAt: new Date(e.mtime * 1000).toISOString(),
    mtimeSec: e.mtime,
    ...(e.mtimeNs !== undefined ? { mtimeNs: e.mtimeNs } : {}),
  };
  if (e.type === 'symlink') {
    if (e.target) out.symlinkTarget = e.target;
    if (e.resolved) {
      const t = typeOf(e.resolved.mode);
      out.resolved = { path: e.resolved.path, type: t === 'symlink' ? 'other' : t, mode: e.resolved.mode & 0o7777 };
    }
  }
  return out;
}

/** The daemon's error for an errno the agent reported about `path`, as the exec path words it. */
export function fileError(path: string, e: unknown): Error {
  if (!(e instanceof AgentOpError)) return e as Error;
  switch (e.errno) {
    case 'ENOENT':
      return errors.fileNotFound(path);
    case 'EACCES':
    case 'EPERM':
      return new CordonError('permission_denied', `${path}: permission denied for this user; run as another user (e.g. root)`, { path });
    case 'ENOSPC':
    case 'EDQUOT':
      return new CordonError('no_space', `${path}: the sandbox's disk is full; remove files or create it with a larger --disk`, { path });
    case 'EROFS':
      return new CordonError('permission_denied', `${path}: the file system is read-only; write under a tmpfs mount instead`, { path });
    case 'EISDIR':
      return new CordonError('invalid_argument', `${path} is a directory`, { path });
    case 'ENOTDIR':
      return new CordonError('invalid_argument', `${path}: a parent is not a directory`, { path });
    case 'EEXIST':
      return new CordonError('already_exists', `${path} already exists`, { path });
    case 'ENOTEMPTY':
      return new CordonError('invalid_argument', `${path}: the directory is not empty`, { path });
    case 'ENOTREG':
      return new CordonError('invalid_argument', `${path} is not a regular file (a FIFO, socket or device); only regular files can be read or written through the API`, { path });
    case 'E2BIG':
      return new CordonError('payload_too_large', `${path}: more than ${MAX_LIST_ENTRIES} entries; list a narrower directory or use a smaller depth`, { path });
    case 'ENODATA':
      return new CordonError('not_found', `${path}: no such extended attribute`, { path });
    case 'EOPNOTSUPP':
      return new CordonError('not_implemented', `${path}: the file system does not support this (${e.message})`, { path });
    default:
      return new CordonError('internal', `${path}: ${e.message || e.errno}`, { path });
  }
}
