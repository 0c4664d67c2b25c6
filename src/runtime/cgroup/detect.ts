import { readFile } from 'node:fs/promises';
import type { CgroupMode } from './driver.js';

export const CGROUP_ROOT = '/sys/fs/cgroup';

/** Controllers a v1 hierarchy can hold; other super options (rw, name=systemd, xattr, …) are not. */
const V1_CONTROLLERS = new Set([
  'cpu', 'cpuacct', 'cpuset', 'memory', 'devices', 'freezer', 'net_cls', 'net_prio', 'blkio', 'perf_event', 'hugetlb', 'pids', 'rdma', 'misc',
]);

export interface V1Hierarchy {
  mountPoint: string;
  /** Empty for a named hierarchy such as name=systemd. */
  controllers: string[];
}

export interface CgroupLayout {
  mode: CgroupMode;
  /** Every v1 hierarchy mounted (v1 and hybrid modes). */
  v1: V1Hierarchy[];
  /** The cgroup2 mount: the whole tree when unified; a side tree (e.g. /sys/fs/cgroup/unified) when hybrid. */
  unified?: string;
}

/** mountinfo escapes space, tab, newline and backslash in paths as \ooo. */
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/**
 * The cgroup mode from /proc/self/mountinfo text. "unified" when the mount at `root` is cgroup2: the
 * same test runc, crun and runsc make (statfs of /sys/fs/cgroup reporting CGROUP2_SUPER_MAGIC), so
 * cordon and the runtimes agree. Otherwise v1 hierarchies with controllers make "v1", or "hybrid"
 * when a cgroup2 mount exists beside them (systemd's hybrid layout, or this host's hugetlb-only one).
 */
export function parseMountinfo(text: string, root = CGROUP_ROOT): CgroupLayout {
  const v1 = new Map<string, V1Hierarchy>();
  const cgroup2: string[] = [];
  let rootType: string | undefined;
  for (const line of text.split('\n')) {
    const f = line.trim().split(' ');
    const sep = f.indexOf('-', 6);
    if (f.length < 5 || sep < 0 || sep + 3 >= f.length) continue;
    const mountPoint = unescape(f[4]);
    const type = f[sep + 1];
    // A later mount on the same point hides the earlier one.
    if (mountPoint === root) rootType = type;
    v1.delete(mountPoint);
    const at = cgroup2.indexOf(mountPoint);
    if (at >= 0) cgroup2.splice(at, 1);
    if (type === 'cgroup2') cgroup2.push(mountPoint);
    if (type === 'cgroup') {
      const controllers = f[sep + 3].split(',').filter((o) => V1_CONTROLLERS.has(o));
      v1.set(mountPoint, { mountPoint, controllers });
    }
  }
  if (rootType === 'cgroup2') return { mode: 'unified', v1: [], unified: root };
  const hierarchies = [...v1.values()].filter((h) => h.mountPoint.startsWith(`${root}/`));
  if (!hierarchies.some((h) => h.controllers.length > 0)) return { mode: 'none', v1: [] };
  const side = cgroup2.find((p) => p.startsWith(`${root}/`));
  return { mode: side ? 'hybrid' : 'v1', v1: hierarchies, ...(side ? { unified: side } : {}) };
}

/** The host's layout, read once by the caller. No cgroup filesystem at all reads as "none". */
export async function detectLayout(root = CGROUP_ROOT, mountinfoPath = '/proc/self/mountinfo'): Promise<CgroupLayout> {
  const text = await readFile(mountinfoPath, 'utf8').catch(() => '');
  return parseMountinfo(text, root);
}
