import { execFile, spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

// Bare runsc containers driven by the runsc command line alone, the floor of cordon's pause and resume:
//  - a twin of a cordon sandbox: the OCI document cordon wrote for it (its init with the agent, its
//    mounts and tmpfs), a rootfs overlay of the same layers, and the global flags cordon started its
//    runsc with (read from the sandbox process's command line). Only the agent's socket directory is
//    the twin's own and empty, so its agent finds no daemon and waits (as a quiesced one does);
//  - a plain container: `sleep` on the base rootfs, no agent, no helper mounts, runsc's defaults.

const run = promisify(execFile);
const CALL_DEADLINE_MS = 300_000;
/** The agent's socket directory inside the sandbox (src/engine/agent/agent-setup.ts). */
const AGENT_RUN_DIR = '/.cordon/run';

export interface BareContainer {
  readonly id: string;
  /** Run a runsc subcommand with this container's global flags. */
  runsc(args: string[]): Promise<{ stdout: string }>;
  /** `runsc checkpoint` into a fresh `image` directory (the container stops); returns the image's bytes. */
  checkpoint(image: string, extra: string[]): Promise<number>;
  /** `runsc restore --detach` from `image` (the stopped container deleted first by the caller). */
  restore(image: string): Promise<void>;
  remove(): Promise<void>;
}

/** Remove a directory without ever descending into a mount left on it (a twin's rootfs overlay). */
export async function removeDir(dir: string): Promise<void> {
  await run('rm', ['-rf', '--one-file-system', '--', dir]);
}

/** Bytes of the files in a flat image directory. */
export function imageBytes(dir: string): number {
  return readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

function bare(id: string, dir: string, flags: string[], bundle: string, cleanup: () => Promise<void>): BareContainer {
  const log = join(dir, 'runsc.log');
  const runsc = (args: string[]) => run('runsc', [...flags, ...args], { timeout: CALL_DEADLINE_MS });
  // --detach with stdio to a file, or the caller waits on the sandbox's stdio (HOST-NOTES).
  const detached = (args: string[]) =>
    new Promise<void>((resolve, reject) => {
      const fd = openSync(log, 'w');
      const p = spawn('runsc', [...flags, ...args], { stdio: ['ignore', fd, fd] });
      closeSync(fd);
      const timer = setTimeout(() => p.kill('SIGKILL'), CALL_DEADLINE_MS);
      p.on('exit', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve();
        else reject(new Error(`runsc ${args[0]} ${id}: ${readFileSync(log, 'utf8').split('\n')[0]}`));
      });
    });
  const c: BareContainer = {
    id,
    runsc,
    async checkpoint(image, extra) {
      rmSync(image, { recursive: true, force: true });
      await runsc(['checkpoint', '--image-path', image, ...extra, id]);
      return imageBytes(image);
    },
    restore: async (image) => {
      await detached(['restore', '--image-path', image, '--bundle', bundle, '--detach', id]);
    },
    async remove() {
      await runsc(['delete', '--force', id]).catch(() => {});
      await cleanup();
    },
  };
  return Object.assign(c, { start: () => detached(['run', '--detach', '--bundle', bundle, id]) });
}

/** The global flags the sandbox process of cordon sandbox `id` was started with (before `boot`), without --root. */
async function cordonRunscFlags(dataDir: string, id: string): Promise<string[]> {
  const root = join(dataDir, 'run', 'runsc');
  const { stdout } = await run('runsc', [`--root=${root}`, 'state', id]);
  const pid = (JSON.parse(stdout) as { pid: number }).pid;
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  const end = argv.indexOf('boot');
  if (end < 0) throw new Error(`sandbox process ${pid} of ${id} has no boot subcommand: ${argv.join(' ')}`);
  return argv.slice(1, end).filter((a) => a.startsWith('--') && !a.startsWith('--root='));
}

/** A bare runsc twin of cordon sandbox `sandboxId`, started and running. */
export async function startTwin(dataDir: string, sandboxId: string, dir: string, name: string): Promise<BareContainer> {
  const src = join(dataDir, 'sandboxes', sandboxId);
  const spec = JSON.parse(readFileSync(join(src, 'bundle', 'config.json'), 'utf8'));
  const { lowerDirs } = JSON.parse(readFileSync(join(src, 'layers.json'), 'utf8')) as { lowerDirs: string[] };
  const flags = await cordonRunscFlags(dataDir, sandboxId);
  await removeDir(dir);
  const rootfs = join(dir, 'rootfs');
  for (const d of ['upper', 'work', 'rootfs', 'bundle', 'agent', 'state']) mkdirSync(join(dir, d), { recursive: true, mode: 0o700 });
  await run('mount', ['-t', 'overlay', 'overlay', '-o', `nodev,lowerdir=${lowerDirs.join(':')},upperdir=${join(dir, 'upper')},workdir=${join(dir, 'work')}`, rootfs]);
  spec.root.path = rootfs;
  for (const m of spec.mounts as { destination: string; source: string }[]) if (m.destination === AGENT_RUN_DIR) m.source = join(dir, 'agent');
  if ((spec.linux.namespaces as { type: string; path?: string }[]).some((n) => n.path)) throw new Error('the twin of a sandbox with a network namespace is not supported');
    const bundle = join(dir, 'bundle');
  const id = `${name}-${process.pid}`;
  // Its own cgroup (cordon's cgroup path would be the sandbox's); runsc delete removes it.
  spec.linux.cgroupsPath = `/${id}`;
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
  const cleanup = async () => {
    await run('umount', [rootfs]).catch(() => {});
    await removeDir(dir);
  };
  const c = bare(id, dir, [`--root=${join(dir, 'state')}`, ...flags], bundle, cleanup) as BareContainer & { start(): Promise<void> };
  await c.start().catch(async (e) => {
    await c.remove();
    throw e;
  });
  return c;
}

/** A plain `sleep` container on `rootfs` (read-only) with a /tmp tmpfs, runsc's default flags but the platform. */
export async function startPlain(rootfs: string, dir: string, name: string, tmpfsMib: number, platform: string): Promise<BareContainer> {
  rmSync(dir, { recursive: true, force: true });
  const bundle = join(dir, 'bundle');
  mkdirSync(bundle, { recursive: true });
  const spec = {
    ociVersion: '1.0.2',
    process: { terminal: false, user: { uid: 0, gid: 0 }, args: ['/bin/sh', '-c', 'exec sleep 100000'], env: ['PATH=/usr/bin:/bin'], cwd: '/' },
    root: { path: rootfs, readonly: true },
    hostname: 'floor',
    mounts: [{ destination: '/proc', type: 'proc', source: 'proc' }, { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: [`size=${tmpfsMib}m`] }],
    linux: { namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }] },
  };
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
  const id = `${name}-${process.pid}`;
  const c = bare(id, dir, [`--root=${join(dir, 'state')}`, `--platform=${platform}`, '--network=none'], bundle, async () => rmSync(dir, { recursive: true, force: true })) as BareContainer & { start(): Promise<void> };
  await c.start().catch(async (e) => {
    await c.remove();
    throw e;
  });
  return c;
}

/** The flags cordon passes to `runsc checkpoint` on this runsc (src/runtime/runsc.ts: uncompressed where it can choose). */
export async function cordonCheckpointFlags(): Promise<string[]> {
  const r = await run('runsc', ['checkpoint', '--help']).catch((e: { stdout?: string; stderr?: string }) => e);
  return /^\s*-compression\b/m.test(`${r.stdout}\n${r.stderr}`) ? ['--compression=none'] : [];
}

/** Write `mib` MiB of random bytes to /tmp/blob inside a bare container (through `runsc exec`, ended before any checkpoint). */
export async function fillBare(c: BareContainer, mib: number): Promise<void> {
  const { stdout } = await c.runsc(['exec', c.id, '/bin/sh', '-c', `head -c ${mib * 1024 * 1024} /dev/urandom > /tmp/blob && stat -c %s /tmp/blob`]);
  if (Number(stdout.trim()) !== mib * 1024 * 1024) throw new Error(`fill of ${c.id} wrote ${stdout.trim()} bytes`);
}
