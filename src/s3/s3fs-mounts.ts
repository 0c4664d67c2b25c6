import { lstat, mkdir, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { CordonError } from '../errors/registry.js';
import { run, runOk } from '../util/proc.js';
import type { BindSpec } from '../volume/host-mounts.js';
import type { S3CredentialStore } from './credentials.js';
import type { S3SyncSpec } from './sync-spec.js';

// The mount mode: s3fs (a maintained S3 FUSE file system, Debian's s3fs package) mounts the bucket
// prefix on the host under the data directory, and the runtime binds that directory into the
// sandbox. The secret reaches s3fs through a 0600 passwd file next to the mount point (never a
// command-line argument or mount option, which /proc and the mount table would show); the sandbox
// sees only the bound directory. s3fs daemonises, so mounts outlive a daemon restart like the
// sandboxes do; they are unmounted at stop and removal, and leftovers at the next daemon start.
//
// Layout: S3MOUNTS/<sandbox>/<n> (mount point of the sandbox's n-th sync) and <n>.passwd.

const MOUNT_DEADLINE_MS = 30_000;
const MOUNT_WAIT_MS = 10_000;

const under = (p: string, root: string) => p === root || p.startsWith(root + sep);

async function mountPoints(): Promise<{ point: string; fstype: string }[]> {
  const out: { point: string; fstype: string }[] = [];
  for (const l of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    const f = l.split(' ');
    const dash = f.indexOf('-');
    if (f.length > 4 && dash > 0) out.push({ point: f[4].replace(/\\040/g, ' '), fstype: f[dash + 1] });
  }
  return out;
}

export class S3fsMounts {
  constructor(
    private readonly dir: string,
    private readonly credentials: S3CredentialStore,
    private readonly binary = 's3fs',
  ) {}

  /** Whether s3fs is installed (a mount-mode sync is refused at create without it). */
  async available(): Promise<boolean> {
    return run(this.binary, ['--version'], { timeoutMs: 5_000 }).then((r) => r.code === 0, () => false);
  }

  async ids(): Promise<string[]> {
    return readdir(this.dir).catch(() => [] as string[]);
  }

  private paths(id: string, n: number) {
    const base = join(this.dir, id);
    return { base, point: join(base, String(n)), passwd: join(base, `${n}.passwd`) };
  }

  /** Mount each mount-mode sync of a booting sandbox; the binds the runtime gets. */
  async prepare(id: string, specs: S3SyncSpec[]): Promise<BindSpec[]> {
    const binds: BindSpec[] = [];
    const mounted = new Set((await mountPoints()).map((m) => m.point));
    for (const [n, s] of specs.entries()) {
      if (s.mode !== 'mount') continue;
      const p = this.paths(id, n);
      await mkdir(p.point, { recursive: true, mode: 0o700 });
      if (!mounted.has(p.point)) await this.mount(s, p);
      binds.push({ source: p.point, destination: s.path, readOnly: !!s.readOnly });
    }
    return binds;
  }

  private async mount(s: S3SyncSpec, p: { point: string; passwd: string }): Promise<void> {
    const c = await this.credentials.get(s.credentials);
    if (c.sessionToken) throw new CordonError('invalid_argument', `s3_sync: credentials ${s.credentials} carry a session token, which the mount mode cannot pass to s3fs; use hooks or on_demand, or long-lived keys`, { field: 's3_sync.credentials' });
    await writeFile(p.passwd, `${c.accessKeyId}:${c.secretAccessKey}\n`, { mode: 0o600 });
    const source = s.prefix ? `${s.bucket}:/${s.prefix.replace(/\/$/, '')}` : s.bucket;
    const opts = [
      `passwd_file=${p.passwd}`,
      `endpoint=${s.region}`,
      ...(s.endpoint ? [`url=${s.endpoint}`] : []),
      ...(s.pathStyle ? ['use_path_request_style'] : []),
      // The runtime (runsc's gofer, crun's user) reaches it as users other than the mounter.
      'allow_other',
      'umask=0000',
      'mp_umask=0000',
      'nodev',
      'nosuid',
      ...(s.readOnly ? ['ro'] : []),
      'dbglevel=err',
      'retries=3',
      'connect_timeout=10',
      'readwrite_timeout=60',
    ];
    try {
      const r = await run(this.binary, [source, p.point, '-o', opts.join(',')], { timeoutMs: MOUNT_DEADLINE_MS, label: 's3fs' });
      if (r.code !== 0) throw new CordonError('unavailable', `s3_sync: mounting ${s.bucket}/${s.prefix} with s3fs failed: ${r.stderr.trim().slice(0, 500) || `exit ${r.code}`}; check the endpoint, bucket and credentials`, { field: 's3_sync' });
      // s3fs returns once it has daemonised; the mount shows up right after.
      const deadline = Date.now() + MOUNT_WAIT_MS;
      while (!(await mountPoints()).some((m) => m.point === p.point && m.fstype.startsWith('fuse'))) {
        if (Date.now() > deadline) throw new CordonError('unavailable', `s3_sync: s3fs did not mount ${s.bucket}/${s.prefix} within ${MOUNT_WAIT_MS / 1000}s`, { field: 's3_sync' });
        await new Promise((r) => setTimeout(r, 50));
      }
    } catch (e) {
      await rm(p.passwd, { force: true });
      throw e;
    }
  }

  /** Unmount a sandbox's S3 mounts (stop) and drop their passwd files. */
  async release(id: string): Promise<void> {
    const base = join(this.dir, id);
    const points = (await mountPoints()).filter((m) => under(m.point, base) && m.point !== base).map((m) => m.point);
    for (const t of points.sort((a, b) => b.length - a.length)) {
      const r = await run('umount', [t], { timeoutMs: 30_000 }).catch(() => ({ code: 1 }));
      if (r.code !== 0) await runOk('umount', ['-l', t], { timeoutMs: 30_000 });
    }
    for (const f of await readdir(base).catch(() => [] as string[])) if (f.endsWith('.passwd')) await rm(join(base, f), { force: true });
  }

  /** Unmount and delete the mount points (removal, and leftovers of removed sandboxes). */
  async destroy(id: string): Promise<void> {
    const base = join(this.dir, id);
    if (!(await lstat(base).then(() => true, () => false))) return;
    await this.release(id);
    if ((await mountPoints()).some((m) => under(m.point, base))) throw new Error(`S3 mounts of sandbox ${id} are still mounted; not deleting their mount points`);
    // Only empty mount points and passwd files live here: rmdir, never a recursive delete through a mount.
    for (const f of await readdir(base).catch(() => [] as string[])) await rmdir(join(base, f)).catch(() => rm(join(base, f), { force: true }));
    await rmdir(base).catch(() => {});
  }
}
