import { lstat, mkdir, readdir, readFile, rename, statfs, writeFile, open } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { run, runOk } from '../util/proc.js';
import type { RootfsDriver } from '../engine/drivers.js';
import type { RootfsSource } from '../engine/types.js';

/** Paths of one sandbox's on-disk state. */
export interface SandboxDirs {
  root: string;
  bundle: string;
  rootfs: string;
  disk: string;
  diskImage: string;
}

const MIN_DISK = 16 * 1024 * 1024;
// Deadline of mkfs (mount and umount use run's default): it writes the whole inode table of a large image.
const MKFS_DEADLINE_MS = 120_000;
const RM_DEADLINE_MS = 10 * 60_000;

export function sandboxDirs(sandboxesDir: string, id: string): SandboxDirs {
  const root = join(sandboxesDir, id);
  return { root, bundle: join(root, 'bundle'), rootfs: join(root, 'rootfs'), disk: join(root, 'disk'), diskImage: join(root, 'disk.img') };
}

/** What a sandbox's rootfs is made of, as prepare() recorded it in the sandbox's own (daemon-owned) directory. */
export async function readLayersFile(root: string): Promise<{ lowerDirs: string[]; diskBytes: number | null }> {
  return JSON.parse(await readFile(join(root, 'layers.json'), 'utf8')) as { lowerDirs: string[]; diskBytes: number | null };
}

/** The lower dirs every sandbox on disk mounts; directories without a layers.json (being made) are skipped. */
export async function lowerDirsOfSandboxes(sandboxesDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const id of await readdir(sandboxesDir).catch(() => [] as string[])) {
    const layers = await readLayersFile(join(sandboxesDir, id)).catch(() => undefined);
    if (layers) out.push(...layers.lowerDirs);
  }
  return out;
}

async function mountedAt(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((l) => l.split(' ')[4] === path);
}

/**
 * Each sandbox's root filesystem: the image layers read-only below, an overlay upper of its own above.
 * With a disk limit the upper lives in a loop-mounted ext4 image of that size, so writes past it get
 * ENOSPC (this kernel has no project quotas).
 */
export class SandboxRootfs implements RootfsDriver {
  constructor(private readonly sandboxesDir: string) {}

  dirs(id: string): SandboxDirs {
    return sandboxDirs(this.sandboxesDir, id);
  }

  async prepare(id: string, source: RootfsSource, diskBytes?: number): Promise<SandboxDirs> {
    if (diskBytes !== undefined && diskBytes < MIN_DISK) {
      throw new RangeError(`disk limit must be at least ${MIN_DISK / 1024 / 1024} MiB`);
    }
    const d = this.dirs(id);
    await mkdir(d.bundle, { recursive: true });
    await mkdir(d.rootfs, { recursive: true });
    await writeFile(join(d.root, 'layers.json'), JSON.stringify({ lowerDirs: source.lowerDirs, diskBytes: diskBytes ?? null }));
    await this.mount(id);
    return d;
  }

  async layers(id: string): Promise<{ lowerDirs: string[]; upper: string }> {
    const d = this.dirs(id);
    const { lowerDirs, diskBytes } = await readLayersFile(d.root);
    return { lowerDirs, upper: join(diskBytes ? d.disk : d.root, 'upper') };
  }

  /** (Re)mount the overlay, e.g. when a stopped sandbox starts again after a host reboot. */
  async mount(id: string): Promise<void> {
    const d = this.dirs(id);
    if (await mountedAt(d.rootfs)) return;
    const { lowerDirs, diskBytes } = await readLayersFile(d.root);
    let base = d.root;
    if (diskBytes) {
      await mkdir(d.disk, { recursive: true });
      if (!(await exists(d.diskImage))) {
        const fh = await open(d.diskImage, 'w');
        await fh.truncate(diskBytes);
        await fh.close();
        await runOk('mkfs.ext4', ['-q', '-F', '-m', '0', '-O', '^has_journal', '-E', 'nodiscard,lazy_itable_init=1', d.diskImage], { timeoutMs: MKFS_DEADLINE_MS });
      }
      if (!(await mountedAt(d.disk))) await runOk('mount', ['-o', 'loop', d.diskImage, d.disk]);
      base = d.disk;
    }
    const upper = join(base, 'upper');
    const work = join(base, 'work');
    await mkdir(upper, { recursive: true, mode: 0o755 });
    await mkdir(work, { recursive: true });
    await mountOverlay(lowerDirs, upper, work, d.rootfs);
    await this.placeHelperTargets(d.rootfs);
  }

  /**
   * Files the runtime bind-mounts onto; made here only when nothing (not even a symlink) is in the way.
   * No process of the sandbox runs while its overlay is being mounted, so what is here is static; the
   * removals never follow a symlink and the files are created exclusively (O_EXCL does not follow one).
   */
  private async placeHelperTargets(rootfs: string): Promise<void> {
    const dir = join(rootfs, '.cordon');
    const st = await lstat(dir).catch(() => undefined);
    if (st && !st.isDirectory()) await removeTree(dir);
    if (!st || !st.isDirectory()) await mkdir(dir, { mode: 0o755 });
    for (const f of ['busybox', 'tini', 'agent', 'supervise']) {
      const p = join(dir, f);
      const fst = await lstat(p).catch(() => undefined);
      if (!fst || !fst.isFile()) {
        if (fst) await removeTree(p);
        await writeFile(p, '', { mode: 0o755, flag: 'wx' });
      }
    }
    // The agent's socket directory is mounted here.
    const run = join(dir, 'run');
    const rst = await lstat(run).catch(() => undefined);
    if (!rst || !rst.isDirectory()) {
      if (rst) await removeTree(run);
      await mkdir(run, { mode: 0o755 });
    }
  }

  async unmount(id: string): Promise<void> {
    const d = this.dirs(id);
    for (const p of [d.rootfs, d.disk]) {
      if (await mountedAt(p)) {
        const r = await run('umount', [p]);
        if (r.code !== 0) await runOk('umount', ['-l', p]);
      }
    }
  }

  /** Unmount and delete everything the sandbox had on disk. Safe to call twice. */
  async destroy(id: string): Promise<void> {
    await this.unmount(id);
    await removeTree(this.dirs(id).root);
  }

  async takeUpper(id: string, dest: string): Promise<void> {
    const d = this.dirs(id);
    if ((await mountedAt(d.rootfs)) || (await mountedAt(d.disk))) throw new Error(`sandbox ${id} is still mounted; stop it first`);
    // A --disk upper lives in a loop image that is not mounted now; builds never use one.
    if (await exists(d.diskImage)) throw new Error(`sandbox ${id} has a disk limit; its writable layer cannot be taken`);
    await rename(join(d.root, 'upper'), dest);
    // The helper mount points (busybox, tini, agent, its socket dir) are the engine's, never the image's.
    await removeTree(join(dest, '.cordon'));
  }

  lowerDirsInUse(): Promise<string[]> {
    return lowerDirsOfSandboxes(this.sandboxesDir);
  }

  /** The file system the sandbox writes to: its --disk image, or the shared one under the data directory. */
  async usage(id: string, diskBytes?: number): Promise<{ usedBytes: number; totalBytes: number }> {
    const d = this.dirs(id);
    try {
      const st = await statfs(diskBytes ? d.disk : d.root);
      return { usedBytes: (st.blocks - st.bfree) * st.bsize, totalBytes: st.blocks * st.bsize };
    } catch {
      return { usedBytes: 0, totalBytes: diskBytes ?? 0 };
    }
  }
}

/**
 * Delete a tree the sandbox made, which can be deeper than PATH_MAX (fs.rm then fails with
 * ENAMETOOLONG): GNU rm walks it relative to directory descriptors, never follows a symlink, and
 * with --one-file-system never descends into a mount that failed to come off.
 */
async function removeTree(p: string): Promise<void> {
  await runOk('rm', ['-rf', '--one-file-system', '--', p], { timeoutMs: RM_DEADLINE_MS });
}

async function exists(p: string): Promise<boolean> {
  return lstat(p).then(() => true, () => false);
}

/**
 * Mount options must fit in a page; with many layers that share a parent, mount from that parent with
 * relative names. `nodev`: a device node from a layer or made inside the sandbox can never be opened
 * through the host's view of its rootfs (inside, /dev is the runtime's own tmpfs).
 */
async function mountOverlay(lowerDirs: string[], upper: string, work: string, target: string): Promise<void> {
  const opts = `nodev,lowerdir=${lowerDirs.join(':')},upperdir=${upper},workdir=${work}`;
  const parent = dirname(lowerDirs[0]);
  if (opts.length < 3800 || !lowerDirs.every((l) => dirname(l) === parent)) {
    await runOk('mount', ['-t', 'overlay', 'overlay', '-o', opts, target]);
    return;
  }
  await runOk('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lowerDirs.map((l) => basename(l)).join(':')},upperdir=${upper},workdir=${work}`, target], { cwd: parent });
}
