import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

// Docker as a side-by-side peer (DESIGN "Benchmarks"): a dockerd of our own, started and stopped here,
// with its own data/exec roots and socket and no networking of any kind (no bridge, no iptables, no
// forwarding or masquerade; every container gets --network none). Installs nothing.

const BASE = '/var/lib/cordon-bench/docker';
const SOCK = join(BASE, 'docker.sock');
const PIDFILE = join(BASE, 'dockerd.pid');
const IMAGE = 'cordon-base:bench';
const CGROUP_PARENT = 'cordon-bench-docker';
const CLIENT = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker'; // the client shipped with docker.io
// A private client config: never read the user's ~/.docker (contexts, credentials) or DOCKER_HOST.
const ENV = (() => {
  const { DOCKER_HOST: _h, DOCKER_CONTEXT: _c, DOCKER_TLS_VERIFY: _t, DOCKER_CERT_PATH: _p, ...rest } = process.env;
  return { ...rest, DOCKER_CONFIG: join(BASE, 'client') };
})();

export interface DockerFigures {
  run: number[]; // `docker run --rm --network none IMAGE echo hi`, spawn → first output
  exec: number[]; // `docker exec CONTAINER true` on a running container, spawn → exit
  version: string;
}

function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function docker(args: string[], input?: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(CLIENT, ['-H', `unix://${SOCK}`, ...args], { env: ENV, stdio: [input ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    if (input) input.pipe(p.stdin!);
    p.stdout!.on('data', (d) => (out += d));
    p.stderr!.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`docker ${args.join(' ')}: exit ${code} ${err.trim()}`))));
  });
}

/** Milliseconds from spawn to the first byte of stdout, or to exit when `toExit` (for `exec … true`). */
function timed(args: string[], toExit = false): Promise<number> {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    let at: number | undefined;
    const p = spawn(CLIENT, ['-H', `unix://${SOCK}`, ...args], { env: ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stdout.once('data', () => (at ??= performance.now() - t));
    p.stdout.resume();
    p.stderr.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('close', (code) => {
      if (toExit) at = performance.now() - t;
      code === 0 && at !== undefined ? resolve(at) : reject(new Error(`docker ${args.join(' ')}: exit ${code} ${err.trim()}`));
    });
  });
}

function logTail(): string {
  try {
    return readFileSync(join(BASE, 'dockerd.log'), 'utf8').trim().split('\n').slice(-8).join('\n');
  } catch {
    return '';
  }
}

async function startDockerd(dockerd: string): Promise<ChildProcess> {
  mkdirSync(join(BASE, 'client'), { recursive: true });
  writeFileSync(join(BASE, 'daemon.json'), '{}\n'); // never pick up the host's /etc/docker/daemon.json
  const log = openSync(join(BASE, 'dockerd.log'), 'a');
  const d = spawn(dockerd, [
    `--config-file=${join(BASE, 'daemon.json')}`,
    `--data-root=${join(BASE, 'data')}`,
    `--exec-root=${join(BASE, 'exec')}`,
    `--pidfile=${PIDFILE}`,
    `-H`, `unix://${SOCK}`,
    '--bridge=none', '--iptables=false', '--ip-forward=false', '--ip-masq=false',
    `--cgroup-parent=/${CGROUP_PARENT}`,
  ], { stdio: ['ignore', log, log] });
  let exited: string | undefined;
  d.on('exit', (code, sig) => (exited = `dockerd exited (${code ?? sig})`));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`${exited}:\n${logTail()}`);
    try {
      await docker(['version', '--format', '{{.Server.Version}}']);
      return d;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`dockerd did not answer on ${SOCK} within 30 s: ${(e as Error).message}\n${logTail()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function stopDockerd(d: ChildProcess): Promise<void> {
  if (d.exitCode === null && d.signalCode === null) {
    const gone = new Promise<void>((r) => d.once('exit', () => r()));
    d.kill('SIGTERM');
    const t = setTimeout(() => d.kill('SIGKILL'), 20_000);
    await gone;
    clearTimeout(t);
  }
}

/** Leftovers of a dockerd that did not shut down cleanly: its containerd and shims (by pid), mounts, cgroups, dirs. */
function cleanup(): void {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(BASE)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone already */
    }
  }
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4]).filter((m) => m?.startsWith(`${BASE}/`) || m === BASE);
  for (const m of mounts.sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
  for (const ctl of existsSync('/sys/fs/cgroup') ? readdirSync('/sys/fs/cgroup') : []) {
    const dir = join('/sys/fs/cgroup', ctl, CGROUP_PARENT);
    if (!existsSync(dir)) continue;
    for (const sub of readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory())) {
      try { rmdirSync(join(dir, sub.name)); } catch { /* still busy */ }
    }
    try { rmdirSync(dir); } catch { /* still busy */ }
  }
  rmSync(BASE, { recursive: true, force: true });
}

function importRootfs(rootfs: string): Promise<string> {
  const tar = spawn('tar', ['-C', rootfs, '-c', '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const tarDone = new Promise<void>((resolve, reject) =>
    tar.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`tar -C ${rootfs} -c .: exit ${code}`)))));
  // Same PATH/LANG the base template's image config gives cordon sandboxes.
  const imported = docker(['import', '-c', 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', '-c', 'ENV LANG=C.UTF-8', '-', IMAGE], tar.stdout);
  return Promise.all([tarDone, imported]).then(([, id]) => id);
}

/**
 * Runs the Docker peer on `rootfs` and returns its figures, or undefined (after printing one line)
 * when dockerd is not installed. dockerd is always stopped and BASE removed before this returns.
 */
export type DockerClient = (args: string[]) => Promise<string>;

export async function dockerPeer(
  rootfs: string,
  runs: number,
  log: (line: string) => void = console.log,
  /** More measurements while dockerd is up, given the client and the imported image's name. */
  extra?: (docker: DockerClient, image: string) => Promise<void>,
): Promise<DockerFigures | undefined> {
  const dockerd = which('dockerd');
  if (!dockerd) {
    log('docker peer skipped: apt-get install docker.io');
    return undefined;
  }
  const pid = Number(existsSync(PIDFILE) ? readFileSync(PIDFILE, 'utf8') : 0);
  if (pid && existsSync(`/proc/${pid}`) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(BASE)) {
    throw new Error(`another docker peer (dockerd pid ${pid}) is using ${BASE}; wait for it or stop it`);
  }
  cleanup(); // leftovers of a previous run killed before its finally
  let d: ChildProcess | undefined;
  const killOnExit = () => d?.kill('SIGKILL');
  process.once('exit', killOnExit);
  try {
    d = await startDockerd(dockerd);
    const version = await docker(['version', '--format', '{{.Server.Version}}']);
    const t = performance.now();
    await importRootfs(rootfs);
    log(`docker peer: dockerd ${version} on ${SOCK}, imported ${rootfs} as ${IMAGE} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    const runArgs = ['run', '--rm', '--network', 'none', IMAGE, 'echo', 'hi'];
    if ((await docker(runArgs)) !== 'hi') throw new Error('docker run did not print hi');
    const run: number[] = [];
    for (let i = 0; i < runs; i++) run.push(await timed(runArgs));
    const name = `cordon-bench-${process.pid}`;
    await docker(['run', '-d', '--name', name, '--network', 'none', IMAGE, 'sleep', 'infinity']);
    const exec: number[] = [];
    try {
      for (let i = 0; i < 5; i++) await timed(['exec', name, 'true'], true);
      for (let i = 0; i < runs; i++) exec.push(await timed(['exec', name, 'true'], true));
    } finally {
      await docker(['rm', '-f', name]).catch(() => {});
    }
    if (extra) await extra((args) => docker(args), IMAGE);
    return { run, exec, version };
  } finally {
    if (d) await stopDockerd(d);
    process.removeListener('exit', killOnExit);
    cleanup();
  }
}
