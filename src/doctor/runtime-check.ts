import { randomBytes } from 'node:crypto';
import { accessSync, constants } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultConfig, type RuntimeName } from '../config.js';
import { prepareCgroups } from '../runtime/cgroup/index.js';
import { createRuntimes } from '../runtime/registry.js';
import { fail, ok, onPath, type CheckResult } from './check.js';

const INSTALL: Record<RuntimeName, string> = {
  runsc: 'install gVisor from bookworm-backports (apt-get install -t bookworm-backports runsc; scripts/setup-host.sh does it)',
  crun: 'apt-get install crun',
  runc: 'apt-get install runc',
};

const executable = (p: string) => {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

export interface RuntimeCheckOptions {
  runtime: RuntimeName;
  required: boolean;
  /** --runtime-binary override; else the runtime is looked up on PATH. */
  binary?: string;
  runscPlatform: 'systrap' | 'ptrace';
  /** Deadline of the whole start-exec-delete round. */
  timeoutMs: number;
}

/**
 * A runtime works when it starts a real sandbox (no network, a busybox rootfs, read-only) and runs
 * `true` in it; everything it made is removed afterwards, also on failure or at the deadline.
 */
export async function checkRuntime(o: RuntimeCheckOptions): Promise<CheckResult> {
  const name = `runtime ${o.runtime}`;
  const binary = onPath(o.binary ?? o.runtime, process.env.PATH, executable);
  if (!binary) {
    const where = o.binary ? `${o.binary} (given with --runtime-binary) does not exist or is not executable` : `${o.runtime} is not on PATH`;
    return fail(name, where, o.binary ? `point --runtime-binary ${o.runtime}= at an executable ${o.runtime}` : INSTALL[o.runtime], o.required);
  }
  const dir = await mkdtemp(join(tmpdir(), 'cordon-doctor-'));
  const id = `doctor-${randomBytes(6).toString('hex')}`;
  const cfg = defaultConfig({ dataDir: dir, runscPlatform: o.runscPlatform, runtimeTimeoutMs: o.timeoutMs, runtimeBinaries: { [o.runtime]: binary } });
  const rt = createRuntimes(cfg).get(o.runtime)!;
  const bundleDir = join(dir, 'bundle');
  const rootfsDir = join(dir, 'rootfs');
  let timer: NodeJS.Timeout | undefined;
  const started = performance.now();
  try {
    await prepareCgroups();
    await rt.check();
    for (const d of ['bin', 'proc', 'dev', 'sys', 'tmp']) await mkdir(join(rootfsDir, d), { recursive: true });
    await mkdir(bundleDir, { recursive: true });
    await copyFile('/bin/busybox', join(rootfsDir, 'bin', 'busybox'));
    const round = (async () => {
      await rt.create({ id, bundleDir, rootfsDir, readOnlyRootfs: true, hostname: 'cordon-doctor', memoryBytes: 128 * 1024 * 1024, pids: 4096, tmpfs: [], binds: [], init: ['/bin/busybox', 'sleep', '600'] });
      const h = rt.exec(id, { args: ['/bin/busybox', 'true'], env: [], cwd: '/', uid: 0, gid: 0 });
      h.stdout.resume();
      h.stderr?.resume();
      return h.exited;
    })();
    round.catch(() => {}); // after a deadline its late failure is of no interest
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`starting a sandbox and running true did not finish within ${o.timeoutMs / 1000}s`)), o.timeoutMs);
    });
    const exit = await Promise.race([round, deadline]);
    if (exit.exitCode !== 0) throw new Error(`true exited with ${exit.exitCode}${exit.signal ? ` (${exit.signal})` : ''}`);
    return ok(name, `${binary}: started a sandbox with no network and ran true (${Math.round(performance.now() - started)} ms)`, o.required);
  } catch (e) {
    const msg = (e as Error).message.split('\n').slice(0, 4).join(' ').slice(0, 600);
    return fail(name, `${binary} could not run a sandbox: ${msg}`, `run \`${binary} --version\` and the runtime's own error above; ${INSTALL[o.runtime]}; see HOST-NOTES for this kernel's quirks`, o.required);
  } finally {
    clearTimeout(timer);
    await rt.delete(id, bundleDir).catch(() => {});
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}
