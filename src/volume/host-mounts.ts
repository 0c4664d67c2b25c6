import { constants } from 'node:fs';
import { lstat, mkdir, open, readFile, readdir, realpath, rmdir, type FileHandle } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { CordonError } from '../errors/registry.js';
import { run, runOk } from '../util/proc.js';

// Host directories handed to a sandbox (Docker's --mount type=bind|overlay). Only directories under
// the operator's --allow-mount-root may be given. The source is canonicalised (realpath), checked
// against the roots, opened (O_PATH) and checked again through that descriptor, and then bound from
// the descriptor (/proc/<pid>/fd/N) onto a staging directory the daemon owns: a path swapped for a
// symlink after the check cannot redirect the mount. The runtime binds the staging directory. Inside
// the sandbox, links in the directory are resolved by the sandbox's own kernel view (crun: its mount
// namespace and root; runsc: the sentry), never by the host's.
//
// Layout, per sandbox: MOUNTS/<sandbox>/<n>/src (the checked host directory, nodev,nosuid[,ro]);
// overlays add upper and work (the sandbox's writes) and merged (what the sandbox sees).

const O_PATH = 0o10000000;
const RM_DEADLINE_MS = 10 * 60_000;

export type HostMountType = 'bind' | 'overlay';

export interface HostMount {
  type: HostMountType;
  /** Host directory as given (canonicalised again at every boot). */
  source: string;
  target: string;
  readOnly: boolean;
}

export interface BindSpec {
  source: string;
  destination: string;
  readOnly: boolean;
}

async function mountInfo(): Promise<string[]> {
  return (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((l) => l.split(' ')[4]).filter(Boolean);
}

const under = (p: string, root: string) => p === root || p.startsWith(root.endsWith(sep) ? root : root + sep);

export class HostMounts {
  constructor(
    private readonly dir: string,
    /** Canonical --allow-mount-root directories. */
    private readonly roots: string[],
    /** Canonical directories no mount may be, lie in or contain (the daemon's data: its database, keys, sandboxes). */
    private readonly protect: string[] = [],
  ) {}

  /** Canonicalise the roots once at start (they are the operator's, but may be symlinks themselves). */
  static async create(dir: string, roots: string[], protect: string[] = []): Promise<HostMounts> {
    const canon: string[] = [];
    for (const r of roots) {
      const c = await realpath(r).catch(() => {
        throw new Error(`--allow-mount-root ${r} does not exist`);
      });
      if (!(await lstat(c)).isDirectory()) throw new Error(`--allow-mount-root ${r} is not a directory`);
      canon.push(c);
    }
    const prot = await Promise.all(protect.map((p) => realpath(p).catch(() => p)));
    return new HostMounts(dir, canon, prot);
  }

  /** Sandboxes that have staging directories (to find those of removed sandboxes after a crash). */
  async ids(): Promise<string[]> {
    return readdir(this.dir).catch(() => [] as string[]);
  }

  /** The canonical source, or a 400/403 naming what to fix. */
  async check(m: HostMount): Promise<string> {
    if (!this.roots.length) {
      throw new CordonError('permission_denied', `mount: host directories may not be mounted on this daemon; the operator allows them with cordon serve --allow-mount-root DIR`, { field: 'mounts' });
    }
    if (!m.source.startsWith('/')) throw new CordonError('invalid_argument', `mount: source ${m.source} must be an absolute host path`, { field: 'mounts' });
    const canon = await realpath(m.source).catch(() => {
      throw new CordonError('invalid_argument', `mount: source ${m.source} does not exist on the host`, { field: 'mounts' });
    });
    if (!this.roots.some((r) => under(canon, r))) {
      throw new CordonError('permission_denied', `mount: source ${m.source} (${canon}) is not under an allowed mount root (${this.roots.join(', ')}); the operator adds roots with cordon serve --allow-mount-root DIR`, { field: 'mounts' });
    }
    const clash = this.protect.find((p) => under(canon, p) || under(p, canon));
    if (clash) throw new CordonError('permission_denied', `mount: source ${m.source} is or holds the daemon's own data (${clash}); mount another directory`, { field: 'mounts' });
    const st = await lstat(canon);
    if (!st.isDirectory()) throw new CordonError('invalid_argument', `mount: source ${m.source} is not a directory`, { field: 'mounts' });
    return canon;
  }

  private base(id: string, n: number) {
    const b = join(this.dir, id, String(n));
    return { base: b, src: join(b, 'src'), upper: join(b, 'upper'), work: join(b, 'work'), merged: join(b, 'merged') };
  }

  /** Mount each host directory for a booting sandbox; returns the binds the runtime gets. */
  async prepare(id: string, mounts: HostMount[]): Promise<BindSpec[]> {
    if (!mounts.length) return [];
    const binds: BindSpec[] = [];
    const mounted = new Set(await mountInfo());
    for (const [n, m] of mounts.entries()) {
      const p = this.base(id, n);
      await mkdir(p.src, { recursive: true, mode: 0o700 });
      // An overlay only reads its lower directory: that bind is read-only too.
      if (!mounted.has(p.src)) await this.bindChecked(m, p.src, m.type === 'bind' ? m.readOnly : true);
      if (m.type === 'bind') {
        binds.push({ source: p.src, destination: m.target, readOnly: m.readOnly });
        continue;
      }
      await mkdir(p.upper, { recursive: true, mode: 0o755 });
      await mkdir(p.work, { recursive: true, mode: 0o700 });
      await mkdir(p.merged, { recursive: true, mode: 0o755 });
      if (!mounted.has(p.merged)) {
        await runOk('mount', ['-t', 'overlay', 'overlay', '-o', `nodev,nosuid,lowerdir=${p.src},upperdir=${p.upper},workdir=${p.work}`, p.merged]);
      }
      binds.push({ source: p.merged, destination: m.target, readOnly: m.readOnly });
    }
    return binds;
  }

  /** Bind the checked directory itself (through its descriptor) onto `target`, nodev and nosuid. */
  private async bindChecked(m: HostMount, target: string, readOnly: boolean): Promise<void> {
    const canon = await this.check(m);
    let fh: FileHandle | undefined;
    try {
      fh = await open(canon, O_PATH | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      // The descriptor's own path: what it really holds, whatever happened to the name since.
      const held = await realpath(`/proc/self/fd/${fh.fd}`);
      if (!this.roots.some((r) => under(held, r))) throw new CordonError('permission_denied', `mount: source ${m.source} moved outside the allowed mount roots while it was checked`, { field: 'mounts' });
      await runOk('mount', ['--bind', `/proc/${process.pid}/fd/${fh.fd}`, target]);
    } finally {
      await fh?.close().catch(() => {});
    }
    const r = await run('mount', ['-o', `remount,bind,nodev,nosuid${readOnly ? ',ro' : ''}`, target]);
    if (r.code !== 0) {
      await run('umount', ['-l', target]);
      throw new Error(`mount: could not make ${m.source} nodev,nosuid${readOnly ? ',ro' : ''}: ${r.stderr.trim()}`);
    }
  }

  /** Unmount a sandbox's host mounts (stop); overlay writes stay for the next start. */
  async release(id: string): Promise<void> {
    const dir = join(this.dir, id);
    const targets = (await mountInfo()).filter((p) => under(p, dir)).sort((a, b) => b.length - a.length);
    for (const t of targets) {
      const r = await run('umount', [t]);
      if (r.code !== 0) await runOk('umount', ['-l', t]);
    }
  }

  /**
   * Unmount and delete (removal). Files are deleted only once nothing is mounted below: the staging
   * `src` of a bind is the host directory itself, and deleting through it would delete the host's files.
   */
  async destroy(id: string): Promise<void> {
    const dir = join(this.dir, id);
    if (!(await lstat(dir).then(() => true, () => false))) return;
    await this.release(id);
    const still = (await mountInfo()).filter((p) => under(p, dir));
    if (still.length) throw new Error(`host mounts of sandbox ${id} are still mounted (${still.join(', ')}); not deleting their staging directories`);
    for (const n of await readdir(dir)) {
      const p = this.base(id, Number(n));
      // src and merged are empty mount points; only upper and work hold files (the sandbox's own writes).
      for (const d of [p.src, p.merged]) await rmdir(d).catch(() => {});
      await runOk('rm', ['-rf', '--one-file-system', '--', p.upper, p.work], { timeoutMs: RM_DEADLINE_MS });
      await rmdir(p.base).catch(() => {});
    }
    await rmdir(dir).catch(() => {});
  }
}
