import { readFileSync } from 'node:fs';
import { cgroupsPathFor } from './cgroup/index.js';
import { defaultSeccomp } from './seccomp.js';
import type { ContainerSpec, ExecSpec } from './types.js';

// OCI runtime-spec documents for a sandbox's container and for processes started in it.

/**
 * Docker's default capability set. Root gets it as bounding, effective and permitted; any other
 * uid gets it as bounding only (nothing effective), as Docker does to match what execve does.
 */
export const CAPS = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_NET_RAW', 'CAP_SYS_CHROOT', 'CAP_MKNOD', 'CAP_AUDIT_WRITE', 'CAP_SETFCAP',
];
const capsFor = (uid: number) => {
  const set = uid === 0 ? CAPS : [];
  return { bounding: CAPS, effective: set, permitted: set, inheritable: [] as string[], ambient: [] as string[] };
};

export const HELPER_DIR = '/.cordon';
export const INIT_ARGS = [`${HELPER_DIR}/tini`, '-s', '-g', '--', `${HELPER_DIR}/busybox`, 'sleep', '2147483647'];
/**
 * The init's stdio are the runtime's own, which lead to a file on the host (the shim's log): anything
 * inside could append to it through /proc/1/fd/1 without bound and fill the host's disk. So the init
 * starts as busybox sh, which points them at the sandbox's /dev/null and execs the real init in its
 * place (same pid). The runtime's own errors still reach the log.
 */
const INIT_STDIO_TO_NULL = [`${HELPER_DIR}/busybox`, 'sh', '-c', 'exec </dev/null >/dev/null 2>&1; exec "$@"', 'cordon-init'];
/** A sandbox's init (tini from the helper directory) starts through that guard; a caller's own (the doctor's probe, no helpers) as given. */
const initArgs = (init = INIT_ARGS) => (init[0].startsWith(`${HELPER_DIR}/`) ? [...INIT_STDIO_TO_NULL, ...init] : init);
export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Our own hard limit on open files: a runtime that drops privileges first cannot raise past it. */
function inheritedNofile(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const hard = Number(line?.trim().split(/\s+/)[4]);
    return Number.isFinite(hard) && hard > 0 ? hard : 1024;
  } catch {
    return 1024;
  }
}
const NOFILE = Math.min(65536, inheritedNofile());

export function processSpec(p: ExecSpec) {
  const rlimits: { type: string; hard: number; soft: number }[] = [{ type: 'RLIMIT_NOFILE', hard: NOFILE, soft: NOFILE }];
  if (p.nproc !== undefined) rlimits.push({ type: 'RLIMIT_NPROC', hard: p.nproc, soft: p.nproc });
  return {
    terminal: !!p.tty,
    ...(p.tty ? { consoleSize: { height: p.tty.rows, width: p.tty.cols } } : {}),
    user: { uid: p.uid, gid: p.gid, ...(p.additionalGids?.length ? { additionalGids: p.additionalGids } : {}) },
    args: p.args,
    env: p.env.some((e) => e.startsWith('PATH=')) ? p.env : [DEFAULT_PATH, ...p.env],
    cwd: p.cwd,
    capabilities: capsFor(p.uid),
    rlimits,
    noNewPrivileges: !!p.noNewPrivileges,
  };
}

export interface SpecOptions {
  /** cgroup pids limit actually written (gVisor needs head-room for its own threads). */
  pidsLimit: number;
  /** Leave the memory limit out of the document (the caller writes it to the cgroup itself). */
  memoryOutsideSpec?: boolean;
  /** Apply Docker's default seccomp profile (crun/runc; gVisor is itself the syscall boundary). */
  seccomp?: boolean;
}

export function containerSpec(c: ContainerSpec, opts: SpecOptions) {
  const mounts: Record<string, unknown>[] = [
    { destination: '/proc', type: 'proc', source: 'proc' },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    ...c.tmpfs.map((t) => ({
      destination: t.path,
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'nodev', `size=${t.sizeBytes}`, 'mode=1777', ...(t.options ?? [])],
    })),
    ...c.binds.map((b) => ({ destination: b.destination, type: 'bind', source: b.source, options: ['rbind', b.readOnly ? 'ro' : 'rw'] })),
  ];
  const resources: Record<string, unknown> = {
    ...(opts.memoryOutsideSpec ? {} : { memory: { limit: c.memoryBytes, swap: c.memoryBytes } }),
    pids: { limit: opts.pidsLimit },
  };
  if (c.cpus) resources.cpu = { quota: Math.round(c.cpus * 100_000), period: 100_000 };
  return {
    ociVersion: '1.0.2',
    // HOME given: without it crun opens the sandbox's /etc/passwd to find one, and a FIFO there hangs it.
    process: processSpec({ args: initArgs(c.init), env: ['HOME=/'], cwd: '/', uid: 0, gid: 0, noNewPrivileges: c.noNewPrivileges }),
    root: { path: c.rootfsDir, readonly: c.readOnlyRootfs },
    hostname: c.hostname,
    mounts,
    linux: {
      cgroupsPath: cgroupsPathFor(c.id),
      resources,
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, c.netnsPath ? { type: 'network', path: c.netnsPath } : { type: 'network' }],
      // Docker's (containerd's) list: host hardware details and power counters (a side channel) stay hidden.
      maskedPaths: [
        '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list', '/proc/timer_stats',
        '/proc/sched_debug', '/proc/scsi', '/sys/firmware', '/sys/devices/virtual/powercap',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
      ...(opts.seccomp ? { seccomp: defaultSeccomp(CAPS) } : {}),
    },
  };
}
