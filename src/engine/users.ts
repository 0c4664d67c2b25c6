import { lstat, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CordonError } from '../errors/registry.js';

export interface ResolvedUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  additionalGids: number[];
}

/** Read a file of the sandbox's rootfs from the host, refusing symlinks so nothing outside is read. */
async function readInside(rootfs: string, rel: string): Promise<string> {
  let p = rootfs;
  for (const part of rel.split('/').filter(Boolean)) {
    p = join(p, part);
    const st = await lstat(p).catch(() => undefined);
    if (!st || st.isSymbolicLink()) return '';
  }
  return readFile(p, 'utf8').catch(() => '');
}

/**
 * Turn "root", "user", "1000" or "1000:1000" into ids using the sandbox's own /etc/passwd and
 * /etc/group, as Docker does for `--user`.
 */
export async function resolveUser(rootfs: string, spec: string): Promise<ResolvedUser> {
  const [userPart, groupPart] = spec.split(':', 2);
  const passwd = (await readInside(rootfs, 'etc/passwd')).split('\n').map((l) => l.split(':'));
  const groups = (await readInside(rootfs, 'etc/group')).split('\n').map((l) => l.split(':'));
  const entry = passwd.find((f) => f.length >= 7 && (f[0] === userPart || f[2] === userPart));
  let uid: number;
  let gid: number;
  let name: string;
  let home: string;
  if (entry) {
    name = entry[0];
    uid = Number(entry[2]);
    gid = Number(entry[3]);
    home = entry[5] || '/';
  } else if (/^\d+$/.test(userPart)) {
    uid = Number(userPart);
    gid = uid;
    name = userPart;
    home = '/';
  } else {
    throw new CordonError('invalid_argument', `user: "${userPart}" does not exist in the sandbox's /etc/passwd; use a name from it or a numeric uid`);
  }
  if (groupPart !== undefined) {
    const g = groups.find((f) => f.length >= 3 && (f[0] === groupPart || f[2] === groupPart));
    if (g) gid = Number(g[2]);
    else if (/^\d+$/.test(groupPart)) gid = Number(groupPart);
    else throw new CordonError('invalid_argument', `user: group "${groupPart}" does not exist in the sandbox's /etc/group`);
  }
  const additionalGids = groups
    .filter((f) => f.length >= 4 && f[3].split(',').includes(name) && Number(f[2]) !== gid)
    .map((f) => Number(f[2]));
  return { name, uid, gid, home, additionalGids };
}
