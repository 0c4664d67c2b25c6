import { readFile, readdir, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isSandboxId } from './driver.js';

// Readers for cgroup interface files. A missing file or controller reads as zero: stats of a
// sandbox whose controller is absent are zeros rather than an error.

export async function readText(path: string): Promise<string | undefined> {
  return readFile(path, 'utf8').catch(() => undefined);
}

export async function readNumber(path: string): Promise<number> {
  const n = Number((await readText(path))?.trim());
  return Number.isFinite(n) ? n : 0;
}

/** A limit: v2 writes "max" for none, v1 a number near 2^63; both read as 0 ("no limit"). */
export async function readLimit(path: string): Promise<number> {
  const n = await readNumber(path);
  return n >= 2 ** 62 ? 0 : n;
}

/** "key value" lines (memory.stat, cpu.stat, memory.events, memory.oom_control). */
export async function readKeyed(path: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const line of ((await readText(path)) ?? '').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && Number.isFinite(Number(v))) out[k] = Number(v);
  }
  return out;
}

/** By stat, not by reading: some interface files (memory.reclaim) are write-only. */
export async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

/** Child cgroups of a directory whose names are sandbox ids. */
export async function listIdDirs(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isDirectory() && isSandboxId(e.name)).map((e) => e.name);
}

/**
 * rmdir a cgroup and any child cgroups below it, deepest first. cgroupfs holds only directories and
 * interface files (no symlinks), and rmdir is the only way to delete a cgroup; one that still has
 * processes stays (EBUSY), which is left for the runtime's own delete to settle.
 */
export async function removeCgroupTree(dir: string, depth = 0): Promise<void> {
  if (depth > 16) return;
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) if (e.isDirectory()) await removeCgroupTree(join(dir, e.name), depth + 1);
  await rmdir(dir).catch(() => {});
}
