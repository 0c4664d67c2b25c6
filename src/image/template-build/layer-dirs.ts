import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runOk } from '../../util/proc.js';

const RM_DEADLINE_MS = 10 * 60_000;

/**
 * The read-only layer directories of built templates, one per build step, in the form overlayfs reads
 * (a sandbox's overlay upper, whiteouts and opaque markers kept). Names are short random ids, so
 * many of them fit in one overlay mount's options.
 */
export class TemplateLayerDirs {
  readonly tmpDir: string;
  constructor(readonly root: string) {
    this.tmpDir = join(root, 'tmp');
  }

  /** Create the folders and clear what an interrupted build left in tmp/. */
  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    await removeTree(this.tmpDir);
    await mkdir(this.tmpDir, { mode: 0o700 });
  }

  static newId(): string {
    return randomBytes(8).toString('hex');
  }

  dir(id: string): string {
    if (!/^[a-f0-9]{16}$/.test(id)) throw new Error(`bad template layer id ${id}`);
    return join(this.root, id);
  }

  has(id: string): boolean {
    return existsSync(this.dir(id));
  }

  /** A fresh path under tmp/ for a layer being made. */
  staging(): string {
    return join(this.tmpDir, `new-${randomBytes(6).toString('hex')}`);
  }

  /** Move a finished layer from staging into place. */
  async commit(staging: string, id: string): Promise<void> {
    await rename(staging, this.dir(id));
  }

  async list(): Promise<string[]> {
    return (await readdir(this.root).catch(() => [] as string[])).filter((n) => /^[a-f0-9]{16}$/.test(n));
  }

  /** Delete a layer: out of place first (so it never looks complete), then from disk. */
  async remove(id: string): Promise<void> {
    const doomed = join(this.tmpDir, `rm-${id}-${randomBytes(4).toString('hex')}`);
    await rename(this.dir(id), doomed).catch(() => {});
    await removeTree(doomed);
  }
}

/** GNU rm walks relative to directory descriptors: never follows a symlink, copes with deep trees. */
export async function removeTree(p: string): Promise<void> {
  await runOk('rm', ['-rf', '--one-file-system', '--', p], { timeoutMs: RM_DEADLINE_MS });
}
