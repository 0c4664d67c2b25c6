import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RuntimeName } from '../config.js';
import { CordonError } from '../errors/registry.js';
import { deadlineError, run, runOk, sleep, type RunResult } from '../util/proc.js';
import { killCgroupProcesses, oomKillCount, readCgroupStats, removeCgroups, setCgroupMemoryLimit } from './cgroup/index.js';
import { spawnPiped, spawnTty } from './exec-spawn.js';
import { containerSpec, processSpec } from './oci-spec.js';
import { initAlive, initExited, ociState, parseOciState } from './oci-state.js';
import { createUnderShim, stopShim } from './shim.js';
import type {
  CheckpointOptions, ContainerExit, ContainerSpec, ContainerStatus, ExecHandle, ExecSpec, Runtime, RuntimeCapabilities, RuntimeState,
} from './types.js';

let execSeq = 0;

/** How a backend calls its binary: the deadline of every call, and an optional binary to use instead. */
export interface RuntimeCallOptions {
  /** Deadline of create, start, delete, pause, resume and of an exec reporting its pid. */
  timeoutMs: number;
  /** Path of the runtime binary (custom builds, and test wrappers); default: the one on PATH. */
  binary?: string;
}

// Calls that only read or signal get a shorter deadline: they never wait on the sandbox itself.
const QUICK_CALLS = new Set(['state', 'kill', 'list', '--version']);
const QUICK_DEADLINE_MS = 15_000;

/**
 * Shared driver for runtimes with the OCI command line (runsc, crun, runc). Subclasses say how the
 * binary is invoked, what pid an exec reports and how a single process is signalled.
 */
export abstract class OciCliRuntime implements Runtime {
  abstract readonly name: RuntimeName;
  abstract readonly capabilities: RuntimeCapabilities;
  constructor(
    protected readonly stateRoot: string,
    protected readonly calls: RuntimeCallOptions,
  ) {}

  /** The binary to run: the configured override, or `fallback` from PATH. */
  protected binary(fallback: string): string {
    return this.calls.binary ?? fallback;
  }

  /** Program and leading arguments for a subcommand. */
  protected abstract command(sub: string, spec?: ContainerSpec): [string, string[]];
  protected abstract pidsLimit(requested: number): number;
  /** Whether the memory limit is set on the cgroup after create instead of in the OCI document. */
  protected readonly memoryOutsideSpec: boolean = false;
  /** Whether containers get Docker's default seccomp profile. */
  protected readonly seccomp: boolean = false;
  /** Turn what the runtime wrote to --pid-file into the pid seen inside the sandbox. */
  protected abstract pidFileArgs(pidFile: string): string[];
  protected abstract sandboxPid(fromPidFile: number): Promise<number>;
  protected abstract signalProcess(id: string, pid: number, hostPidFromFile: number, sig: NodeJS.Signals): Promise<void>;

  protected deadline(sub: string): number {
    return QUICK_CALLS.has(sub) ? Math.min(this.calls.timeoutMs, QUICK_DEADLINE_MS) : this.calls.timeoutMs;
  }

  /** Run one subcommand (args[0]) with its deadline; rejects only when the deadline hits. */
  protected call(args: string[], spec?: ContainerSpec): Promise<RunResult> {
    const [cmd, pre] = this.command(args[0], spec);
    return run(cmd, [...pre, ...args], { timeoutMs: this.deadline(args[0]), label: `${this.name} ${args[0]}` });
  }

  /** Like call, but a non-zero exit throws with the runtime's message. */
  protected async cli(args: string[], spec?: ContainerSpec): Promise<string> {
    const [cmd, pre] = this.command(args[0], spec);
    const r = await runOk(cmd, [...pre, ...args], { timeoutMs: this.deadline(args[0]), label: `${this.name} ${args[0]}` });
    return r.stdout;
  }

  async check(): Promise<void> {
    const r = await this.call(['--version']).catch((e: Error) => ({ code: -1, stderr: e.message, stdout: '' }));
    if (r.code !== 0) {
      throw new Error(`${this.name} is not usable (${r.stderr.trim() || 'not installed'}); install it with apt-get (see README)`);
    }
  }

  async create(spec: ContainerSpec): Promise<RuntimeState> {
    const pidFile = await this.startUnderShim(spec, 'create', []);
    // runsc wires the sandbox's network at start, so start gets the same network flags as create.
    await this.cli(['start', spec.id], spec);
    return this.stateFrom(pidFile);
  }

  /**
   * Write the bundle's config.json and run `sub` (create, or restore) under the shim, which then stays
   * as the parent that reaps the container's processes. Returns the pid file the runtime wrote.
   */
  protected async startUnderShim(spec: ContainerSpec, sub: string, extra: string[]): Promise<string> {
    await mkdir(this.stateRoot, { recursive: true });
    const doc = containerSpec(spec, { pidsLimit: this.pidsLimit(spec.pids), memoryOutsideSpec: this.memoryOutsideSpec, seccomp: this.seccomp });
    await writeFile(join(spec.bundleDir, 'config.json'), JSON.stringify(doc));
    const pidFile = join(spec.bundleDir, 'init.pid');
    await rm(pidFile, { force: true });
    const [cmd, pre] = this.command(sub, spec);
    await createUnderShim({
      label: `${this.name} ${sub}`,
      cmd,
      args: [...pre, sub, ...extra, '--bundle', spec.bundleDir, '--pid-file', pidFile, spec.id],
      bundleDir: spec.bundleDir,
      timeoutMs: this.deadline(sub),
    });
    if (this.memoryOutsideSpec) await setCgroupMemoryLimit(spec.id, spec.memoryBytes);
    return pidFile;
  }

  protected async stateFrom(pidFile: string): Promise<RuntimeState> {
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    return { ...ociState(pid) };
  }

  async adopt(id: string, state: RuntimeState | undefined): Promise<ContainerStatus> {
    const status = await this.status(id);
    if (status !== 'running' && status !== 'paused') return status;
    return initAlive(parseOciState(state)) ? status : 'missing';
  }

  // The shim is not our child (it outlives the daemon), so its exit cannot be awaited: the init's pid is watched.
  alive(_id: string, state: RuntimeState | undefined): boolean {
    return initAlive(parseOciState(state));
  }

  async wait(id: string, state: RuntimeState | undefined, signal?: AbortSignal): Promise<ContainerExit> {
    await initExited(parseOciState(state), signal);
    return { oomKilled: (await oomKillCount(id).catch(() => 0)) > 0 };
  }

  async checkpoint(_id: string, _dir: string, _opts: CheckpointOptions): Promise<void> {
    throw this.unsupported('checkpoint');
  }

  async restore(_spec: ContainerSpec, _dir: string): Promise<RuntimeState> {
    throw this.unsupported('checkpoint');
  }

  /** The typed error for an operation this backend does not declare. */
  protected unsupported(capability: 'checkpoint'): CordonError {
    return new CordonError(
      'not_implemented',
      `runtime ${this.name} cannot ${capability} (capability ${capability}: ${this.capabilities[capability]}); use a sandbox on runsc for that`,
      { runtime: this.name, capability },
    );
  }

  async status(id: string): Promise<ContainerStatus> {
    const r = await this.call(['state', id]);
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
    const handle = spec.tty ? spawnTty(cmd, args, spec.tty, ready) : spawnPiped(cmd, args, ready);
    let hostPid = 0;
    const pid = (async () => {
      await ready;
      const deadline = Date.now() + this.calls.timeoutMs;
      // The runtime may be caught between creating the pid file and writing it: only a positive
      // number counts. A 0 taken as the pid would be fatal: `runsc kill --pid 0` signals the init.
      const readPid = async () => {
        const n = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
        return Number.isSafeInteger(n) && n > 0 ? n : 0;
      };
      for (let i = 0; !(hostPid = await readPid()); i++) {
        if (handle.done && !(hostPid = await readPid())) throw new Error('process exited before it reported a pid');
        if (hostPid) break;
        if (Date.now() > deadline) {
          handle.kill();
          throw deadlineError(`${this.name} exec`, this.calls.timeoutMs, 'report the process pid');
        }
        await sleep(i < 50 ? 1 : 5);
      }
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
        // Never after the exit (the pid may belong to another process by now), never a pid <= 0.
        if (handle.done || p <= 0) return;
        await this.signalProcess(id, p, hostPid, sig);
      },
      resize: handle.resize,
    };
  }

  async killAll(id: string, sig: NodeJS.Signals): Promise<void> {
    await this.call(['kill', '--all', id, sig]);
  }

  async pause(id: string): Promise<void> {
    await this.cli(['pause', id]);
  }

  async resume(id: string): Promise<void> {
    await this.cli(['resume', id]);
  }

  /** runc and crun pause through the cgroup freezer already: the whole container stops. */
  async freeze(id: string): Promise<void> {
    await this.pause(id);
  }

  async delete(id: string, bundleDir?: string): Promise<void> {
    const r = await this.call(['delete', '--force', id]);
    if (r.code !== 0 && (await this.status(id)) !== 'missing') {
      throw new Error(`${this.name} delete ${id} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
    }
    await stopShim(bundleDir);
    await killCgroupProcesses(id);
    await removeCgroups(id);
  }

  async list(): Promise<string[]> {
    const r = await this.call(['list', '--quiet']);
    if (r.code !== 0) return [];
    return r.stdout.split('\n').map((s) => s.trim()).filter(Boolean);
  }

  stats(id: string) {
    return readCgroupStats(id);
  }

  setMemoryLimit(id: string, bytes: number) {
    return setCgroupMemoryLimit(id, bytes);
  }
}
