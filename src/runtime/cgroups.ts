import { readFile, writeFile, rmdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContainerStats } from './types.js';

// cgroup v1 accounting for sandboxes. Every backend places a sandbox at /cordon/<id> in each controller.
const ROOT = '/sys/fs/cgroup';
const CONTROLLERS = ['memory', 'cpu,cpuacct', 'cpuacct', 'cpu', 'pids', 'blkio', 'freezer', 'cpuset', 'devices'];

export const cgroupsPathFor = (id: string) => `/cordon/${id}`;

const file = (controller: string, id: string, name: string) => join(ROOT, controller, 'cordon', id, name);

async function readNumber(path: string): Promise<number> {
  try {
    const n = Number((await readFile(path, 'utf8')).trim());
    return Number.isFinite(n) ? n : 0;
  } catch {
    return 0;
  }
}

async function readKeyed(path: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  try {
    for (const line of (await readFile(path, 'utf8')).split('\n')) {
      const [k, v] = line.trim().split(/\s+/);
      if (k && v !== undefined) out[k] = Number(v);
    }
  } catch {
    /* controller missing: report zeros */
  }
  return out;
}

async function blkioBytes(id: string): Promise<{ read: number; write: number }> {
  let read = 0;
  let write = 0;
  try {
    const text = await readFile(file('blkio', id, 'blkio.throttle.io_service_bytes_recursive'), 'utf8');
    for (const line of text.split('\n')) {
      const [, op, v] = line.trim().split(/\s+/);
      if (op === 'Read') read += Number(v);
      if (op === 'Write') write += Number(v);
    }
  } catch {
    /* no blkio accounting */
  }
  return { read, write };
}

export async function readCgroupStats(id: string): Promise<ContainerStats> {
  const [cpu, mem, limit, pids, oom, io] = await Promise.all([
    readNumber(file('cpuacct', id, 'cpuacct.usage')),
    readKeyed(file('memory', id, 'memory.stat')),
    readNumber(file('memory', id, 'memory.limit_in_bytes')),
    readNumber(file('pids', id, 'pids.current')),
    readKeyed(file('memory', id, 'memory.oom_control')),
    blkioBytes(id),
  ]);
  const usage = await readNumber(file('memory', id, 'memory.usage_in_bytes'));
  // Page cache that can be dropped is not "used"; Docker reports usage minus inactive_file the same way.
  const used = Math.max(0, usage - (mem.total_inactive_file ?? 0));
  return {
    cpuUsageNs: cpu,
    memoryUsageBytes: used,
    memoryLimitBytes: limit,
    pids,
    diskReadBytes: io.read,
    diskWriteBytes: io.write,
    oomKills: oom.oom_kill ?? 0,
  };
}

export async function oomKillCount(id: string): Promise<number> {
  return (await readKeyed(file('memory', id, 'memory.oom_control'))).oom_kill ?? 0;
}

/** Change the memory limit of a live sandbox. memsw must stay >= mem, so order the writes. */
export async function setCgroupMemoryLimit(id: string, bytes: number): Promise<void> {
  const memPath = file('memory', id, 'memory.limit_in_bytes');
  const swPath = file('memory', id, 'memory.memsw.limit_in_bytes');
  const current = await readNumber(memPath);
  const hasSwapFile = await readFile(swPath, 'utf8').then(() => true, () => false);
  if (bytes > current) {
    if (hasSwapFile) await writeFile(swPath, String(bytes));
    await writeFile(memPath, String(bytes));
  } else {
    await writeFile(memPath, String(bytes));
    if (hasSwapFile) await writeFile(swPath, String(bytes));
  }
}

/**
 * SIGKILL whatever still runs in a deleted sandbox's cgroups (a runtime call killed at its deadline
 * can leave a half-started sandbox process behind). Only for ids this daemon just deleted: the
 * cgroup tree is shared by every daemon on the host.
 */
export async function killCgroupProcesses(id: string): Promise<void> {
  for (let pass = 0; pass < 40; pass++) {
    const pids = await cgroupPids(id);
    if (!pids.size) return;
    // A frozen (paused) process only dies once thawed.
    if (pass === 0) await writeFile(file('freezer', id, 'freezer.state'), 'THAWED').catch(() => {});
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function cgroupPids(id: string): Promise<Set<number>> {
  const pids = new Set<number>();
  for (const c of ['pids', 'memory', 'cpu,cpuacct', 'freezer']) {
    const text = await readFile(file(c, id, 'cgroup.procs'), 'utf8').catch(() => '');
    for (const l of text.split('\n')) if (Number(l) > 0) pids.add(Number(l));
  }
  return pids;
}

/** Remove what a backend left behind for a sandbox (runtimes normally do this on delete). */
export async function removeCgroups(id: string): Promise<void> {
  for (const c of CONTROLLERS) {
    try {
      await rmdir(join(ROOT, c, 'cordon', id));
    } catch {
      /* absent, or a symlinked controller already handled */
    }
  }
}

export async function listCgroupIds(): Promise<string[]> {
  try {
    return (await readdir(join(ROOT, 'memory', 'cordon'), { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch {
    return [];
  }
}
