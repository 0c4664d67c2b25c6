import { existsSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { deadlineError, sleep, startDetached } from '../util/proc.js';

const SHIM_INIT = '/usr/bin/tini-static';
const SHIM_SLEEP = '/bin/busybox sleep';
/** argv[0] of the shim's shell: how a shim is recognised in /proc. */
const SHIM_TAG = 'cordon-shim';

/**
 * Run the runtime's `create` under a small shim (tini as child subreaper, then an idle sleep), the way
 * containerd keeps a shim per container: the container's processes get a parent that reaps them at once,
 * so a killed sandbox is gone immediately instead of lingering as a zombie of the host's init.
 * The shim leads its own session (tini puts its child in a process group of its own, but not in a
 * new session), so stopping it means killing that session. Its pid is recorded before anything else
 * so that an interrupted create (deadline, daemon crash) can still be stopped.
 */
export async function createUnderShim(o: { label: string; cmd: string; args: string[]; bundleDir: string; timeoutMs: number }): Promise<void> {
  const logFile = join(o.bundleDir, 'create.log');
  const marker = join(o.bundleDir, 'created');
  await rm(marker, { force: true });
  const script = `"$@" || exit $?; : > ${JSON.stringify(marker)}; exec ${SHIM_SLEEP} 2147483647`;
  const child = await startDetached(SHIM_INIT, ['-s', '--', '/bin/sh', '-c', script, SHIM_TAG, o.cmd, ...o.args], { log: logFile, label: o.label });
  let done = false;
  child.exited.finally(() => (done = true)).catch(() => {});
  await writeFile(join(o.bundleDir, 'shim.pid'), String(child.pid));
  const deadline = Date.now() + o.timeoutMs;
  for (let i = 0; !done && !existsSync(marker); i++) {
    if (Date.now() > deadline) {
      await killSession(child.pid);
      throw deadlineError(o.label, o.timeoutMs);
    }
    await sleep(i < 100 ? 2 : 10);
  }
  if (!existsSync(marker)) {
    const { code, signal } = await child.exited;
    throw new Error(`${o.label} failed (exit ${signal ?? code}): ${(await readFile(logFile, 'utf8')).trim().split('\n').slice(-3).join(' | ')}`);
  }
}

/** Whether `pid` is the shim of the container whose bundle is `bundleDir` (never an unrelated process). */
async function isShimOf(pid: number, bundleDir: string): Promise<boolean> {
  if (!(pid > 0)) return false;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  if (!cmdline.startsWith(`${SHIM_INIT}\0`) || !cmdline.includes(`\0${SHIM_TAG}\0`) || !cmdline.includes(`\0--bundle\0${bundleDir}\0`)) return false;
  // A sandbox's own processes live in its cgroup; a shim never does, whatever its command line says.
  const cgroup = await readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => '/cordon/');
  return !cgroup.includes('/cordon/');
}

/** Stop the shim of a container (it only idles once the container is gone, or holds a wedged create). */
export async function stopShim(bundleDir: string | undefined): Promise<void> {
  if (!bundleDir) return;
  const pid = Number(await readFile(join(bundleDir, 'shim.pid'), 'utf8').catch(() => ''));
  if (await isShimOf(pid, bundleDir)) await killSession(pid);
}

/** Shims running for bundles under `sandboxesDir` (this daemon's), with the sandbox id of each. */
export async function listShims(sandboxesDir: string): Promise<{ pid: number; id: string }[]> {
  const found: { pid: number; id: string }[] = [];
  const prefix = `${sandboxesDir.replace(/\/$/, '')}/`;
  for (const name of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(name)) continue;
    const args = (await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (args[0] !== SHIM_INIT || !args.includes(SHIM_TAG)) continue;
    const bundle = args[args.indexOf('--bundle') + 1] ?? '';
    const m = bundle.startsWith(prefix) ? /^([^/]+)\/bundle$/.exec(bundle.slice(prefix.length)) : null;
    if (m && (await isShimOf(Number(name), bundle))) found.push({ pid: Number(name), id: m[1] });
  }
  return found;
}

/** Stop a shim found by listShims. */
export function killShim(pid: number): Promise<void> {
  return killSession(pid);
}

/** SIGKILL every process of session `sid` (the shim, its shell, a runtime call it still runs). */
async function killSession(sid: number): Promise<void> {
  // Again while some were found: a process may fork while the session is being walked.
  for (let pass = 0; pass < 5; pass++) {
    const members = await sessionMembers(sid);
    if (!members.length) return;
    for (const pid of members) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    await sleep(10);
  }
}

async function sessionMembers(sid: number): Promise<number[]> {
  const pids = (await readdir('/proc').catch(() => [] as string[])).filter((n) => /^\d+$/.test(n));
  const inSession = await Promise.all(
    pids.map(async (pid) => {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
      // Fields after the command name (which may hold spaces and parentheses): state ppid pgrp session.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return Number(f[3]) === sid && f[0] !== 'Z';
    }),
  );
  return pids.filter((_, i) => inSession[i]).map(Number);
}
