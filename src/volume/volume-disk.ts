import { chmod, lstat, mkdir, open, readFile, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { run, runOk } from '../util/proc.js';

// A named volume's storage on the host: a sparse ext4 image of the volume's size, loop-mounted
// (nodev, nosuid) under DATA/volumes/<id>/mnt. Its root directory `data` is what sandboxes mount.
// Why an image per volume: this kernel has no project quotas (see HOST-NOTES), an image gives
// ENOSPC at exactly the size, volumes stay independent of each other and of the data directory's
// file system, and a hostile volume cannot hard-link or rename anything outside itself.

export const MIN_VOLUME_BYTES = 16 * 1024 * 1024;
export const DEFAULT_VOLUME_BYTES = 1024 * 1024 * 1024;
const MKFS_DEADLINE_MS = 120_000;
const RM_DEADLINE_MS = 10 * 60_000;

export interface VolumePaths {
  dir: string;
  image: string;
  mount: string;
  /** The directory sandboxes see at their mount path (the root of the volume's files). */
  data: string;
}

async function mountedAt(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((l) => l.split(' ')[4] === path);
}

export class VolumeDisks {
  constructor(private readonly root: string) {}

  paths(id: string): VolumePaths {
    const dir = join(this.root, id);
    const mount = join(dir, 'mnt');
    return { dir, image: join(dir, 'disk.img'), mount, data: join(mount, 'data') };
  }

  /** Make the image (sparse) and its file system, then mount it. */
  async create(id: string, sizeBytes: number): Promise<VolumePaths> {
    const p = this.paths(id);
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    await mkdir(p.dir, { mode: 0o700 });
    const fh = await open(p.image, 'wx', 0o600);
    try {
      await fh.truncate(sizeBytes);
    } finally {
      await fh.close();
    }
    await runOk('mkfs.ext4', ['-q', '-F', '-m', '0', '-O', '^has_journal', '-E', 'nodiscard,lazy_itable_init=1,root_owner=0:0', p.image], { timeoutMs: MKFS_DEADLINE_MS });
    await this.mount(id);
    // Sticky and world-writable like /tmp: any user of any sandbox may create files, none may remove another's.
    await mkdir(p.data, { mode: 0o1777 }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
    await chmod(p.data, 0o1777);
    return p;
  }

  /** Mount the image when it is not mounted (daemon start, after a host reboot). */
  async mount(id: string): Promise<void> {
    const p = this.paths(id);
    if (await mountedAt(p.mount)) return;
    await mkdir(p.mount, { recursive: true, mode: 0o700 });
    await runOk('mount', ['-o', 'loop,nodev,nosuid', p.image, p.mount]);
  }

  async mounted(id: string): Promise<boolean> {
    return mountedAt(this.paths(id).mount);
  }

  /**
   * Unmount and delete. Lazy: a sandbox that still has the volume mounted (rm -f) keeps its view
   * until it stops; the image's blocks are freed when the last user lets go.
   */
  async destroy(id: string): Promise<void> {
    const p = this.paths(id);
    if (await mountedAt(p.mount)) {
      const r = await run('umount', [p.mount]);
      if (r.code !== 0) await runOk('umount', ['-l', p.mount]);
    }
    if (await lstat(p.dir).then(() => true, () => false)) {
      await runOk('rm', ['-rf', '--one-file-system', '--', p.dir], { timeoutMs: RM_DEADLINE_MS });
    }
  }

  async usage(id: string): Promise<{ usedBytes: number; totalBytes: number } | undefined> {
    try {
      const st = await statfs(this.paths(id).mount);
      return { usedBytes: (st.blocks - st.bfree) * st.bsize, totalBytes: st.blocks * st.bsize };
    } catch {
      return undefined;
    }
  }

  /** Remove a half-made volume's directory (a create that failed). */
  async discard(id: string): Promise<void> {
    await this.destroy(id).catch(() => rm(this.paths(id).dir, { recursive: true, force: true }));
  }
}
