import { createHmac, randomBytes } from 'node:crypto';
import { CordonError } from '../errors/registry.js';
import { InRootError, readFileInRoot, stampsInTopDir, statInRoot } from '../util/read-in-root.js';

export interface ResolvedUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  additionalGids: number[];
  /**
   * Identifies the content of both /etc/passwd and /etc/group as this lookup found them, when both
   * were read and neither changed in the last second (a digest of their stamps; undefined otherwise).
   * The agent keeps its uid/gid names while it stays the same instead of checking both files itself.
   */
  accountsKey?: string;
}

/** Bigger account files than this are treated as absent (a real one with thousands of users is < 1 MiB). */
const MAX_ACCOUNT_FILE = 4 * 1024 * 1024;
const MAX_ID = 2 ** 31 - 1;

interface AccountFile {
  rows: string[][];
  /** Why the file counts as absent, for messages ("... is a FIFO, not a regular file"). */
  absent?: string;
  /** The file's stamp, when it is settled (unchanged for ACCOUNT_SETTLE_MS): equal stamps, equal content. */
  settledStamp?: string;
}

/**
 * Parsed account files by rootfs and path, with the stamp of what was parsed: every command resolves
 * its user, and re-reading /etc/passwd and /etc/group each time is a dozen thread-pool round trips.
 * A stamp check (a synchronous walk, no read) decides whether the copy is still the file's content.
 */
const accountCache = new Map<string, { stamp: string; rows: string[][] }>();
const ACCOUNT_CACHE_ENTRIES = 512;
/** Larger files are parsed again each time rather than held (a normal passwd is a few KiB). */
const ACCOUNT_CACHE_MAX_FILE = 64 * 1024;
/**
 * A file changed this recently is not cached: the kernel's change time is coarse (a clock tick), so a
 * second write within the same tick with the same size would leave the stamp as it was.
 */
const ACCOUNT_SETTLE_MS = 1000;

/**
 * A colon-separated account file of the sandbox, read from the host without leaving its rootfs.
 * `quickStamp`: the file's stamp from stampsInTopDir when it had one (a plain file in a plain /etc):
 * the cached copy is checked against it instead of a walk.
 */
async function readAccounts(rootfs: string, path: string, quickStamp?: string): Promise<AccountFile> {
  const key = `${rootfs}\0${path}`;
  try {
    const cached = accountCache.get(key);
    if (cached && (quickStamp ?? statInRoot(rootfs, path, MAX_ACCOUNT_FILE).key) === cached.stamp) return { rows: cached.rows, settledStamp: cached.stamp };
    const { data, stamp } = await readFileInRoot(rootfs, path, MAX_ACCOUNT_FILE);
    const rows = data.toString('utf8').split('\n').map((l) => l.split(':'));
    accountCache.delete(key);
    const settled = Date.now() - stamp.changedAtMs >= ACCOUNT_SETTLE_MS;
    if (data.length <= ACCOUNT_CACHE_MAX_FILE && settled) {
      accountCache.set(key, { stamp: stamp.key, rows });
      if (accountCache.size > ACCOUNT_CACHE_ENTRIES) accountCache.delete(accountCache.keys().next().value!);
    }
    return { rows, settledStamp: settled ? stamp.key : undefined };
  } catch (e) {
    accountCache.delete(key);
    if (!(e instanceof InRootError)) throw e;
    return { rows: [], absent: e.problem === 'missing' ? `the sandbox has no ${path}` : e.message };
  }
}

/** Digests of stamp pairs (hashing per request would cost more than the lookup it saves). */
const accountsKeys = new Map<string, string>();
/** Keys the digests: a sandbox cannot search the stamps' host inode and device numbers out of them. */
const ACCOUNTS_KEY_SECRET = randomBytes(32);

/** A keyed digest of both files' stamps (which hold host inode numbers: those stay on the host). */
function accountsKeyOf(passwd: AccountFile, group: AccountFile): string | undefined {
  if (!passwd.settledStamp || !group.settledStamp) return undefined;
  const both = `${passwd.settledStamp}\n${group.settledStamp}`;
  let key = accountsKeys.get(both);
  if (key === undefined) {
    key = createHmac('sha256', ACCOUNTS_KEY_SECRET).update(both).digest('base64url').slice(0, 32);
    accountsKeys.set(both, key);
    if (accountsKeys.size > ACCOUNT_CACHE_ENTRIES) accountsKeys.delete(accountsKeys.keys().next().value!);
  }
  return key;
}

const isId = (s: string | undefined) => s !== undefined && /^\d+$/.test(s);

function parseId(s: string, what: 'uid' | 'gid'): number {
  const n = Number(s);
  if (n > MAX_ID) throw new CordonError('invalid_argument', `user: ${what} ${s} is out of range; use 0 to ${MAX_ID}`);
  return n;
}

/**
 * Turn "", "root", "user", "1000", "1000:1000" or "name:group" into ids from the sandbox's own
 * /etc/passwd and /etc/group, with Docker's (runc's) rules: a numeric uid without an entry runs as
 * that uid with gid 0 and HOME=/; a numeric gid needs no entry; supplementary groups come from
 * /etc/group only when no group is given. The default user ("" or "root") is uid 0 even when the
 * image has no passwd entry for it, as Docker runs such images.
 */
export async function resolveUser(rootfs: string, spec: string): Promise<ResolvedUser> {
  const colon = spec.indexOf(':');
  const userPart = colon === -1 ? spec : spec.slice(0, colon);
  const groupPart = colon === -1 ? '' : spec.slice(colon + 1).split(':')[0];
  const numericUid = isId(userPart) ? parseId(userPart, 'uid') : undefined;
  const isDefault = userPart === '' || userPart === 'root';

  // Both files' stamps in four system calls; a walk per file took sixteen, on every request.
  const [passwdStamp, groupStamp] = stampsInTopDir(rootfs, 'etc', ['passwd', 'group']).map((s) => s?.key);
  const passwd = await readAccounts(rootfs, '/etc/passwd', passwdStamp);
  const users = passwd.rows.filter((f) => f.length >= 4 && isId(f[2]) && isId(f[3]));
  const entry = isDefault
    ? (users.find((f) => f[0] === 'root') ?? users.find((f) => Number(f[2]) === 0))
    : numericUid !== undefined
      ? users.find((f) => Number(f[2]) === numericUid)
      : users.find((f) => f[0] === userPart);

  let user: ResolvedUser;
  if (entry) user = { name: entry[0], uid: Number(entry[2]), gid: Number(entry[3]), home: entry[5] || '/', additionalGids: [] };
  else if (isDefault) user = { name: 'root', uid: 0, gid: 0, home: '/', additionalGids: [] };
  else if (numericUid !== undefined) user = { name: userPart, uid: numericUid, gid: 0, home: '/', additionalGids: [] };
  else if (passwd.absent) {
    throw new CordonError('invalid_argument', `user: "${userPart}" cannot be looked up because ${passwd.absent}; use a numeric uid[:gid] instead`);
  } else {
    throw new CordonError('invalid_argument', `user: "${userPart}" does not exist in the sandbox's /etc/passwd; use a name from it or a numeric uid`);
  }
  if (user.uid > MAX_ID || user.gid > MAX_ID) throw new CordonError('invalid_argument', `user: "${userPart}" has an id out of range in the sandbox's /etc/passwd`);

  if (groupPart !== '') {
    const numericGid = isId(groupPart) ? parseId(groupPart, 'gid') : undefined;
    if (numericGid !== undefined) {
      user.gid = numericGid;
      return user;
    }
    const group = await readAccounts(rootfs, '/etc/group', groupStamp);
    const g = group.rows.find((f) => f.length >= 3 && f[0] === groupPart && isId(f[2]));
    if (g) user.gid = parseId(g[2], 'gid');
    else if (group.absent) throw new CordonError('invalid_argument', `user: group "${groupPart}" cannot be looked up because ${group.absent}; use a numeric gid instead`);
    else throw new CordonError('invalid_argument', `user: group "${groupPart}" does not exist in the sandbox's /etc/group`);
    return user;
  }
  if (entry) {
    const group = await readAccounts(rootfs, '/etc/group', groupStamp);
    user.additionalGids = group.rows
      .filter((f) => f.length >= 4 && isId(f[2]) && f[3].split(',').includes(user.name) && Number(f[2]) !== user.gid && Number(f[2]) <= MAX_ID)
      .map((f) => Number(f[2]));
    user.accountsKey = accountsKeyOf(passwd, group);
  }
  return user;
}

/**
 * Why runc would hang or misread the sandbox's account files, if it would. runc (unlike crun and
 * runsc) opens /etc/passwd and /etc/group inside the sandbox for every process it starts: a FIFO
 * there blocks it forever, and a path into /proc, /dev or /sys reaches what the runtime mounted.
 */
export async function runcAccountFilesProblem(rootfs: string): Promise<string | undefined> {
  for (const path of ['/etc/passwd', '/etc/group']) {
    const problem = await readFileInRoot(rootfs, path, MAX_ACCOUNT_FILE, { refuseUnder: ['/proc', '/dev', '/sys'] }).then(
      () => undefined,
      (e: Error) => {
        if (!(e instanceof InRootError)) throw e;
        return e.problem === 'not-regular' || e.problem === 'runtime-mount' ? e.message : undefined;
      },
    );
    if (problem) return `${problem}; runc reads it inside the sandbox for every process and would block on it`;
  }
  return undefined;
}
