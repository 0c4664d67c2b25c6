import { existsSync, readFileSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { detectLayout } from '../runtime/cgroup/detect.js';
import { formatBytes } from '../util/units.js';
import { run } from '../util/proc.js';
import { fail, ok, warn, type CheckResult } from './check.js';

const read = (p: string) => {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return undefined;
  }
};

/** Run a probe program with a short deadline; undefined when it is missing or fails to start. */
const probe = (cmd: string, args: string[]) => run(cmd, args, { timeoutMs: 10_000 }).catch(() => undefined);

export function checkOverlay(): CheckResult {
  const fs = read('/proc/filesystems') ?? '';
  if (/\toverlay$/m.test(fs)) return ok('overlayfs', 'the kernel has overlay');
  return fail('overlayfs', 'overlay is not in /proc/filesystems', 'load it with modprobe overlay (and add it to /etc/modules-load.d/)');
}

export async function checkCgroups(): Promise<CheckResult> {
  const layout = await detectLayout();
  let controllers: string[];
  if (layout.mode === 'unified') controllers = (read(`${layout.unified ?? '/sys/fs/cgroup'}/cgroup.controllers`) ?? '').trim().split(/\s+/).filter(Boolean);
  else controllers = layout.v1.flatMap((h) => h.controllers);
  const missing = ['memory', 'pids', 'cpu'].filter((c) => !controllers.includes(c));
  const detail = `cgroup ${layout.mode === 'unified' ? 'v2' : layout.mode === 'hybrid' ? 'v1 (hybrid)' : 'v1'}; controllers ${controllers.join(' ') || 'none'}`;
  if (missing.includes('memory') || missing.includes('pids')) {
    return fail('cgroups', `${detail}; missing ${missing.join(', ')}`, 'boot with the memory and pids controllers enabled (e.g. cgroup_enable=memory on the kernel command line; on v2, enable them in cgroup.subtree_control)');
  }
  if (missing.length) return warn('cgroups', `${detail}; missing ${missing.join(', ')}`, 'enable the cpu controller, or --cpus limits are not enforced');
  return ok('cgroups', detail);
}

export function checkNamespaces(): CheckResult[] {
  const kinds = ['pid', 'net', 'mnt', 'ipc', 'uts'];
  const missing = kinds.filter((k) => !existsSync(`/proc/self/ns/${k}`));
  const out = [missing.length ? fail('namespaces', `missing ${missing.join(', ')} namespaces`, 'use a kernel built with CONFIG_NAMESPACES and the missing kinds') : ok('namespaces', kinds.join(', '))];
  const maxUser = Number(read('/proc/sys/user/max_user_namespaces') ?? '0');
  const hasUser = existsSync('/proc/self/ns/user') && maxUser > 0;
  out.push(hasUser ? ok('user namespaces', `max_user_namespaces ${maxUser}`, false) : warn('user namespaces', 'not available', 'set sysctl user.max_user_namespaces=15000 (cordon runs as root and does not need them today; rootless runtimes do)'));
  return out;
}

export async function checkNftables(egressInterface: string | undefined): Promise<CheckResult> {
  const r = await probe('nft', ['list', 'tables']);
  const required = !!egressInterface;
  if (r && r.code === 0) return ok('nftables', 'nft works (lists tables)', required);
  const why = r ? (r.stderr.trim() || `exit ${r.code}`) : 'nft is not installed';
  return fail('nftables', why, 'apt-get install nftables (needed for sandboxes with a network; run as root)', required);
}

export function checkPressure(): CheckResult {
  if (read('/proc/pressure/cpu')) return ok('cpu pressure (PSI)', '/proc/pressure/cpu is readable', false);
  return warn('cpu pressure (PSI)', '/proc/pressure/cpu is missing', 'boot with psi=1 to let admission judge CPU saturation; without it only memory and counts are judged');
}

/** Free space where the data directory is (or would be created). */
export async function checkDisk(dataDir: string, minFree: number): Promise<CheckResult> {
  let dir = dataDir;
  while (!existsSync(dir) && dir !== dirname(dir)) dir = dirname(dir);
  const s = await statfs(dir);
  const free = s.bavail * s.bsize;
  const detail = `${formatBytes(free)} free at ${dir}${dir !== dataDir ? ` (where ${dataDir} will be)` : ''}`;
  if (free < minFree) return fail('disk', `${detail}, below ${formatBytes(minFree)}`, `free space there, or pass --data-dir on a larger file system (the base template takes ~180 MB, each image and sandbox more)`);
  return ok('disk', detail);
}

export async function checkEgress(iface: string | undefined): Promise<CheckResult | undefined> {
  if (!iface) return undefined;
  const name = `egress interface ${iface}`;
  if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(iface) || !existsSync(`/sys/class/net/${iface}`)) {
    return fail(name, 'no such interface', 'pass --egress-interface the name of an interface from `ip link`');
  }
  const state = (read(`/sys/class/net/${iface}/operstate`) ?? 'unknown').trim();
  const addr = await probe('ip', ['-4', '-o', 'addr', 'show', 'dev', iface]);
  const ipv4 = addr?.stdout.match(/inet (\S+)/)?.[1];
  if (!ipv4) return fail(name, `operstate ${state}; no IPv4 address`, `give ${iface} an IPv4 address (sandbox egress leaves through it over IPv4)`);
  if (state === 'down') return fail(name, `operstate down (${ipv4})`, `ip link set ${iface} up`);
  return ok(name, `${ipv4}, operstate ${state}`);
}

/** Clock sync: timedatectl where systemd runs, else chrony; neither is a warning, not a failure. */
export async function checkTimeSync(): Promise<CheckResult> {
  const t = await probe('timedatectl', ['show', '-p', 'NTPSynchronized', '--value']);
  if (t && t.code === 0) {
    if (t.stdout.trim() === 'yes') return ok('time sync', 'timedatectl: NTP synchronized', false);
    return warn('time sync', 'timedatectl: the clock is not NTP synchronized', 'enable a time service (timedatectl set-ntp true, or install chrony); tokens and signed URLs expire by the clock');
  }
  const c = await probe('chronyc', ['-n', 'tracking']);
  if (c && c.code === 0) {
    const leap = c.stdout.match(/Leap status\s*:\s*(.+)/)?.[1]?.trim();
    if (leap === 'Normal') return ok('time sync', 'chrony: synchronized', false);
    return warn('time sync', `chrony: leap status ${leap ?? 'unknown'}`, 'check chronyc sources; tokens and signed URLs expire by the clock');
  }
  return warn('time sync', 'neither timedatectl nor chronyc answered', 'install chrony (or systemd-timesyncd); tokens and signed URLs expire by the clock');
}

export function checkFiles(agentPath: string, supervisorPath: string): CheckResult[] {
  const out: CheckResult[] = [];
  for (const [what, path, pkg] of [['busybox', '/bin/busybox', 'busybox-static'], ['tini', '/usr/bin/tini-static', 'tini']]) {
    out.push(existsSync(path) ? ok(`helper ${what}`, path) : fail(`helper ${what}`, `${path} is missing (the daemon refuses to start)`, `apt-get install ${pkg}`));
  }
  const missing = [agentPath, supervisorPath].find((p) => !existsSync(p));
  out.push(
    !missing
      ? ok('sandbox agent', `${agentPath} (supervisor ${supervisorPath})`, false)
      : warn('sandbox agent', `${missing} is missing; sandboxes run through the runtime's exec path (slower)`, 'build it with npm run build (needs golang-1.23-go from bookworm-backports and musl-tools)'),
  );
  return out;
}

/** The file gate (file rules and events): the built cordon-fsgate and the kernel's FUSE device. */
export function checkFileGate(gatePath: string | undefined): CheckResult {
  const fix = 'apt-get install fuse3 golang-github-hanwen-go-fuse-dev, then npm run build (file rules and file events are refused until then)';
  if (!gatePath || !existsSync(gatePath)) return warn('file gate', 'cordon-fsgate was not built', fix);
  if (!existsSync('/dev/fuse') || !/\tfuse$/m.test(read('/proc/filesystems') ?? '')) return warn('file gate', '/dev/fuse or the fuse file system is missing', 'modprobe fuse (and add it to /etc/modules-load.d/)');
  return ok('file gate', `${gatePath}; /dev/fuse`, false);
}

export async function checkMmdebstrap(): Promise<CheckResult> {
  const r = await probe('mmdebstrap', ['--version']);
  if (r && r.code === 0) return ok('mmdebstrap', r.stdout.trim().split('\n')[0], false);
  return warn('mmdebstrap', 'not installed', 'apt-get install mmdebstrap (builds the base template on first start; not needed when --templates-dir already holds it)');
}
