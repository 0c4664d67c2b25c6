import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import * as pty from 'node-pty';
import type { RuntimeName } from '../config.js';
import { pidAlive, run, runOk, sleep } from '../util/proc.js';
import { oomKillCount, readCgroupStats, removeCgroups, setCgroupMemoryLimit } from './cgroups.js';
import { containerSpec, processSpec } from './oci-spec.js';
import type { ContainerSpec, ContainerStatus, ExecHandle, ExecSpec, ExitStatus, Runtime } from './types.js';

let execSeq = 0;
const SHIM_INIT = '/usr/bin/tini-static';
const SHIM_SLEEP = '/bin/busybox sleep';

/**
 * Shared driver for runtimes with the OCI command line (runsc, crun, runc). Subclasses say how the
 * binary is invoked, what pid an exec reports and how a single process is signalled.
 */
export abstract class OciCliRuntime implements Runtime {
  abstract readonly name: RuntimeName;
  constructor(protected readonly stateRoot: string) {}

  /** Program and leading arguments for a subcommand. */
  protected abstract command(sub: string, spec?: ContainerSpec): [string, string[]];
  protected abstract pidsLimit(requested: number): number;
  /** Whether the memory limit is set on the cgroup after create instead of in the OCI document. */
  protected readonly memoryOutsideSpec: boolean = false;
  /** Turn what the runtime wrote to --pid-file into the pid seen inside the sandbox. */
  protected abstract pidFileArgs(pidFile: string): string[];
  protected abstract sandboxPid(fromPidFile: number): Promise<number>;
  protected abstract signalProcess(id: string, pid: number, hostPidFromFile: number, sig: NodeJS.Signals): Promise<void>;

  protected async cli(args: string[], input?: string): Promise<string> {
    const [cmd, pre] = this.command(args[0]);
    const r = await runOk(cmd, [...pre, ...args], { input });
    return r.stdout;
  }

  async check(): Promise<void> {
    const [cmd, pre] = this.command('--version');
    const r = await run(cmd, [...pre, '--version']).catch((e: Error) => ({ code: -1, stderr: e.message, stdout: '' }));
    if (r.code !== 0) {
      throw new Error(`${this.name} is not usable (${r.stderr.trim() || 'not installed'}); install it with apt-get (see README)`);
    }
  }

  async create(spec: ContainerSpec): Promise<{ initPid: number }> {
    await mkdir(this.stateRoot, { recursive: true });
    const doc = containerSpec(spec, { pidsLimit: this.pidsLimit(spec.pids), memoryOutsideSpec: this.memoryOutsideSpec });
    await writeFile(join(spec.bundleDir, 'config.json'), JSON.stringify(doc));
    const pidFile = join(spec.bundleDir, 'init.pid');
    await this.createUnderShim(['create', '--bundle', spec.bundleDir, '--pid-file', pidFile, spec.id], spec.bundleDir, spec);
    if (this.memoryOutsideSpec) await setCgroupMemoryLimit(spec.id, spec.memoryBytes);
    // runsc wires the sandbox's network at start, so start gets the same network flags as create.
    const [startCmd, startPre] = this.command('start', spec);
    await runOk(startCmd, [...startPre, 'start', spec.id]);
    const initPid = Number((await readFile(pidFile, 'utf8')).trim());
    return { initPid };
  }

  /**
   * Run `create` under a small shim (tini as child subreaper, then an idle sleep), the way containerd
   * keeps a shim per container: the container's processes get a parent that reaps them at once, so a
   * killed sandbox is gone immediately instead of lingering as a zombie of the host's init.
   */
  private async createUnderShim(args: string[], bundleDir: string, spec?: ContainerSpec): Promise<void> {
    const [cmd, pre] = this.command(args[0], spec);
    const logFile = join(bundleDir, 'create.log');
    const marker = join(bundleDir, 'created');
    await rm(marker, { force: true });
    const log = await open(logFile, 'w');
    try {
      const script = `"$@" || exit $?; : > ${JSON.stringify(marker)}; exec ${SHIM_SLEEP} 2147483647`;
      const child = spawn(SHIM_INIT, ['-s', '--', '/bin/sh', '-c', script, 'cordon-shim', cmd, ...pre, ...args], {
        detached: true,
        stdio: ['ignore', log.fd, log.fd],
      });
      child.unref();
      const exited = new Promise<number | null>((resolve, reject) => {
        child.on('error', reject);
        child.on('exit', resolve);
      });
      let done = false;
      exited.finally(() => (done = true)).catch(() => {});
      for (let i = 0; !done && !existsSync(marker); i++) await sleep(i < 100 ? 2 : 10);
      if (!existsSync(marker)) {
        const code = await exited;
        throw new Error(`${this.name} ${args[0]} failed (exit ${code}): ${(await readFile(logFile, 'utf8')).trim().split('\n').slice(-3).join(' | ')}`);
      }
      await writeFile(join(bundleDir, 'shim.pid'), String(child.pid));
    } finally {
      await log.close();
    }
  }

  /** Stop the shim of a deleted container (it only idles once the container is gone). */
  private async stopShim(bundleDir: string | undefined): Promise<void> {
    if (!bundleDir) return;
    const pid = Number(await readFile(join(bundleDir, 'shim.pid'), 'utf8').catch(() => ''));
    // Only a process that is still our shim: a stale pid file must never signal an unrelated process.
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (pid > 0 && pidAlive(pid) && cmdline.includes('cordon-shim')) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    }
  }

  async status(id: string): Promise<ContainerStatus> {
    const [cmd, pre] = this.command('state');
    const r = await run(cmd, [...pre, 'state', id]);
    if (r.code !== 0) return 'missing';
    const st = JSON.parse(r.stdout).status as string;
    if (st === 'running') return 'running';
    if (st === 'paused') return 'paused';
    return 'stopped';
  }

  exec(id: string, spec: ExecSpec): ExecHandle {
    const dir = join(this.stateRoot, 'exec');
    const n = `${process.pid}-${++execSeq}`;
    const procFile = join(dir, `${id}-${n}.json`);
    const pidFile = join(dir, `${id}-${n}.pid`);
    const ready = (async () => {
      await mkdir(dir, { recursive: true });
      await writeFile(procFile, JSON.stringify(processSpec(spec)));
    })();
    const [cmd, pre] = this.command('exec');
    const args = [...pre, 'exec', '--process', procFile, ...this.pidFileArgs(pidFile), id];
    const cleanup = () => Promise.all([rm(procFile, { force: true }), rm(pidFile, { force: true })]);
    const handle = spec.tty ? this.spawnTty(cmd, args, spec.tty, ready) : this.spawnPiped(cmd, args, ready);
    let hostPid = 0;
    const pid = (async () => {
      await ready;
      for (let i = 0; i < 2000 && !existsSync(pidFile); i++) {
        if (handle.done && !existsSync(pidFile)) throw new Error('process exited before it reported a pid');
        await sleep(i < 50 ? 1 : 5);
      }
      hostPid = Number((await readFile(pidFile, 'utf8')).trim());
      return this.sandboxPid(hostPid);
    })();
    pid.catch(() => {});
    const exited = handle.exited.finally(() => setTimeout(cleanup, 50));
    return {
      stdin: handle.stdin,
      stdout: handle.stdout,
      stderr: handle.stderr,
      pid,
      exited,
      signal: async (sig) => {
        const p = await pid;
        await this.signalProcess(id, p, hostPid, sig);
      },
      resize: handle.resize,
    };
  }

  private spawnPiped(cmd: string, args: string[], ready: Promise<void>) {
    const stdin = new PassThrough();
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const state = { done: false };
    const exited = new Promise<ExitStatus>((resolve) => {
      ready.then(
        () => {
          const child: ChildProcess = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
          stdin.pipe(child.stdin!);
          child.stdin!.on('error', () => {});
          child.stdout!.pipe(stdout);
          child.stderr!.pipe(stderr);
          child.on('error', (e) => {
            state.done = true;
            stderr.end(`cordon: ${e.message}\n`);
            resolve({ exitCode: 127 });
          });
          // 'exit', not 'close': a background grandchild may hold the pipes open long after the
          // command itself has finished (the process manager drains what is left for a moment).
          child.on('exit', (code, signal) => {
            state.done = true;
            resolve({ exitCode: code ?? 128 + signalNumber(signal), signal: signal ?? undefined });
          });
        },
        (e: Error) => {
          state.done = true;
          stdout.end();
          stderr.end(`cordon: ${e.message}\n`);
          resolve({ exitCode: 127 });
        },
      );
    });
    return {
      stdin,
      stdout,
      stderr,
      exited,
      get done() {
        return state.done;
      },
      resize: () => {},
    };
  }

  private spawnTty(cmd: string, args: string[], size: { cols: number; rows: number }, ready: Promise<void>) {
    const stdin = new PassThrough();
    const stdout = new PassThrough();
    const state = { done: false, term: undefined as pty.IPty | undefined };
    const exited = new Promise<ExitStatus>((resolve) => {
      ready.then(
        () => {
          const term = pty.spawn(cmd, args, { cols: size.cols, rows: size.rows, name: 'xterm-256color', env: process.env as Record<string, string> });
          state.term = term;
          // Backpressure: stop reading the terminal while nobody takes its output (the program then blocks).
          let held = false;
          term.onData((d) => {
            if (stdout.write(Buffer.from(d, 'binary')) || held) return;
            held = true;
            term.pause();
            stdout.once('drain', () => {
              held = false;
              term.resume();
            });
          });
          stdin.on('data', (d: Buffer) => term.write(d.toString('binary')));
          stdin.on('end', () => term.write('\x04'));
          term.onExit(({ exitCode, signal }) => {
            state.done = true;
            stdout.end();
            resolve({ exitCode: signal ? 128 + signal : exitCode });
          });
        },
        (e: Error) => {
          state.done = true;
          stdout.end(`cordon: ${e.message}\r\n`);
          resolve({ exitCode: 127 });
        },
      );
    });
    return {
      stdin,
      stdout,
      stderr: undefined,
      exited,
      get done() {
        return state.done;
      },
      resize: (cols: number, rows: number) => state.term?.resize(cols, rows),
    };
  }

  async killAll(id: string, sig: NodeJS.Signals): Promise<void> {
    const [cmd, pre] = this.command('kill');
    await run(cmd, [...pre, 'kill', '--all', id, sig]);
  }

  async pause(id: string): Promise<void> {
    await this.cli(['pause', id]);
  }

  async resume(id: string): Promise<void> {
    await this.cli(['resume', id]);
  }

  async delete(id: string, bundleDir?: string): Promise<void> {
    const [cmd, pre] = this.command('delete');
    const r = await run(cmd, [...pre, 'delete', '--force', id]);
    if (r.code !== 0 && (await this.status(id)) !== 'missing') {
      throw new Error(`${this.name} delete ${id} failed: ${r.stderr.trim()}`);
    }
    await this.stopShim(bundleDir);
    await removeCgroups(id);
  }

  async list(): Promise<string[]> {
    const [cmd, pre] = this.command('list');
    const r = await run(cmd, [...pre, 'list', '--quiet']);
    if (r.code !== 0) return [];
    return r.stdout.split('\n').map((s) => s.trim()).filter(Boolean);
  }

  stats(id: string) {
    return readCgroupStats(id);
  }

  setMemoryLimit(id: string, bytes: number) {
    return setCgroupMemoryLimit(id, bytes);
  }

  oomKills(id: string) {
    return oomKillCount(id);
  }
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGUSR1: 10, SIGUSR2: 12, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15 };
export function signalNumber(sig: string | null | undefined): number {
  return sig ? (SIGNALS[sig] ?? 0) : 0;
}
