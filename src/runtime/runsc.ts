import { mkdir, rename, rm } from 'node:fs/promises';
import type { DaemonConfig } from '../config.js';
import { CordonError } from '../errors/registry.js';
import { run } from '../util/proc.js';
import { capabilitiesOf } from './capabilities.js';
import { OciCliRuntime, type RuntimeCallOptions } from './oci-cli.js';
import { HELPER_DIR } from './oci-spec.js';
import { cgroupFrozen, freezeCgroup, thawCgroup } from './cgroup/index.js';
import { withRootfsTmp } from './rootfs-tmp.js';
import { SentryUnreachable, sentryCall } from './runsc-control.js';
import type { CheckpointOptions, ContainerSpec, ContainerStatus, ExecHandle, ExecSpec, RuntimeCapabilities, RuntimeState } from './types.js';

// busybox's shell prefers its own applets to programs of the same name (`ls` would be busybox's, not
// the image's), so the command is looked up on PATH here and exec'd by full path, which never runs
// an applet.
const EXEC_ON_PATH = [
  'c=$1; shift',
  'case $c in */*) exec "$c" "$@" ;; esac',
  'IFS=:',
  'for d in $PATH; do [ -n "$d" ] && [ -f "$d/$c" ] && [ -x "$d/$c" ] && exec "$d/$c" "$@"; done',
  'echo "cordon: $c: command not found" >&2',
  'exit 127',
].join('\n');

const HIDE_SYSNET = 'mount -t tmpfs -o ro,size=4k cordon-sysnet /proc/sys/net && exec "$0" "$@"';
/** Calls that start a sandbox's gofer, which decides whether host sockets may be opened. */
const HOST_SOCKET_CALLS = new Set(['create', 'restore']);
/** Calls that set up the sandbox's network: they need the same network flags. */
const NETWORKED_CALLS = new Set(['create', 'start', 'restore']);

/**
 * gVisor. The rootfs is the host overlay the engine mounted (--overlay2=none), so writes land on
 * the sandbox's own upper dir and disk limits hold; the sandbox has no network until policy exists.
 */
export class RunscRuntime extends OciCliRuntime {
  readonly name = 'runsc' as const;
  readonly capabilities: RuntimeCapabilities;
  /** Whether this runsc has --allow-suid (gVisor release-20250820.0 and later). */
  private allowSuid = false;
  /** Whether this runsc's checkpoint takes --compression (gVisor 2024 and later). */
  private compressionFlag = false;
  constructor(stateRoot: string, calls: RuntimeCallOptions, private readonly platform: DaemonConfig['runscPlatform']) {
    super(stateRoot, calls);
    this.capabilities = capabilitiesOf('runsc', platform);
  }

  /**
   * gVisor before release-20250820.0 hard-wires no_new_privs: PR_GET_NO_NEW_PRIVS always answers 1
   * and execve ignores set-user-ID bits, so `sudo` cannot work there whatever the OCI document says.
   * Later releases honour set-user-ID binaries only with --allow-suid, and then honour each process's
   * noNewPrivileges as Linux does; we pass the flag whenever this runsc knows it.
   */
  override async check(): Promise<void> {
    await super.check();
    const r = await run(this.binary('runsc'), ['flags'], { timeoutMs: 15_000 }).catch(() => ({ stdout: '', stderr: '' }));
    this.allowSuid = /^\s*-allow-suid\b/m.test(`${r.stdout}\n${r.stderr}`);
    const help = await run(this.binary('runsc'), ['checkpoint', '--help'], { timeoutMs: 15_000 }).catch(() => ({ stdout: '', stderr: '' }));
    this.compressionFlag = /^\s*-compression\b/m.test(`${help.stdout}\n${help.stderr}`);
  }

  // /tmp stays on the rootfs, as under crun and Docker, instead of gVisor's own tmpfs (rootfs-tmp.ts).
  override async create(spec: ContainerSpec): Promise<RuntimeState> {
    return super.create(await withRootfsTmp(spec));
  }

  protected command(sub: string, spec?: ContainerSpec): [string, string[]] {
    const flags = [`--root=${this.stateRoot}`, `--platform=${this.platform}`, '--overlay2=none'];
    if (this.allowSuid) flags.push('--allow-suid');
    // The gofer opens host Unix sockets only in the sandbox's bind mounts (the agent's socket directory).
    if (spec?.hostSockets && HOST_SOCKET_CALLS.has(sub)) flags.push('--host-uds=open');
    const runsc = this.binary('runsc');
    if (!(NETWORKED_CALLS.has(sub) && spec?.netnsPath)) return [runsc, [...flags, '--network=none']];
    // runsc refuses a network in what it takes for the root netns because this kernel shows
    // /proc/sys/net/core/rmem_default everywhere; a read-only empty tmpfs there hides it (HOST-NOTES).
    return ['unshare', ['-m', '--propagation', 'private', '/bin/sh', '-c', HIDE_SYSNET, runsc, ...flags, '--network=sandbox']];
  }

  // The sentry's own threads count against the pids cgroup and it panics when starved (HOST-NOTES),
  // so the cgroup gets head-room and the user's limit is applied as RLIMIT_NPROC per process.
  // With the limit in the spec gVisor sizes its own memory to it and answers a bomb with ENOMEM, so
  // nothing is killed or reported. Set on the cgroup only, the host kernel OOM-kills the sandbox at
  // the limit and the supervisor records why it died.
  protected override readonly memoryOutsideSpec = true;

  protected pidsLimit(requested: number): number {
    return Math.max(requested, 4096) + 512;
  }

  // `runsc exec --process` ignores the document's rlimits, so the process limit is set by a busybox
  // shell that then execs the command (argv unchanged). Root is exempt from RLIMIT_NPROC anyway.
  override exec(id: string, spec: ExecSpec): ExecHandle {
    if (spec.nproc === undefined || spec.uid === 0) return super.exec(id, spec);
    const args = [`${HELPER_DIR}/busybox`, 'sh', '-c', `ulimit -u ${spec.nproc} || exit 126\n${EXEC_ON_PATH}`, 'cordon-exec', ...spec.args];
    return super.exec(id, { ...spec, args });
  }

  /**
   * `runsc checkpoint` writes the sandbox's kernel state and memory; the image appears at `dir` only once
   * it is complete. Without leaveRunning the sandbox is frozen first and written with --leave-running,
   * then deleted: a plain checkpoint that fails (an open TCP connection, say) takes the sandbox down with
   * it, and a frozen sandbox cannot run on between the image and its deletion (its files on the host
   * would then be newer than its memory). A failed checkpoint leaves the sandbox as it was.
   */
  override async checkpoint(id: string, dir: string, opts: CheckpointOptions): Promise<void> {
    // Each runsc call costs a process start (100-300 ms on a loaded host): with deferDelete the caller
    // knows the container runs and deletes it itself, so its state is not asked for.
    type State = { bundle?: string; status?: string };
    const st: State = opts.deferDelete ? { status: 'running' } : JSON.parse(await this.cli(['state', id]));
    const partial = `${dir}.partial`;
    await rm(partial, { recursive: true, force: true });
    await mkdir(partial, { recursive: true, mode: 0o700 });
    const thaw = !opts.leaveRunning && st.status === 'running' ? await this.freezeSentry(id) : undefined;
    try {
      const r = await this.call(['checkpoint', '--image-path', partial, ...this.checkpointFlags(), '--leave-running', id]);
      if (r.code !== 0) throw checkpointError(id, r.stderr || r.stdout);
    } catch (e) {
      await thaw?.().catch(() => {});
      await rm(partial, { recursive: true, force: true });
      throw e;
    }
    await replaceDir(partial, dir);
    if (!opts.leaveRunning && !opts.deferDelete) await this.delete(id, st.bundle);
  }

  /**
   * Memory is written uncompressed where runsc lets us choose: flate (its default) costs the sentry
   * CPU for every page and gains nothing on the random or already-compressed data that dominates
   * large sandboxes (256 MiB of random bytes: checkpoint ~4x and restore ~2x faster without it, on
   * this host under load; bench/pause.ts). The image of an idle sandbox grows from ~1 to ~4 MiB.
   * Restore reads either format, so images written before this change still resume.
   */
  private checkpointFlags(): string[] {
    return this.compressionFlag ? ['--compression=none'] : [];
  }

  /**
   * Stop every task of the sandbox (its kernel pauses; a checkpoint with --leave-running leaves it
   * paused) and return how to undo it. Asked of the sentry's control socket directly: `runsc pause`
   * would cost a process start, as much as the checkpoint of an idle sandbox itself. When the socket
   * cannot be reached (another runsc layout) it falls back to `runsc pause`.
   */
  private async freezeSentry(id: string): Promise<() => Promise<void>> {
    try {
      await sentryCall(this.stateRoot, id, 'containerManager.Pause');
      return () => sentryCall(this.stateRoot, id, 'containerManager.Resume');
    } catch (e) {
      if (!(e instanceof SentryUnreachable)) throw e;
      await this.pause(id);
      return () => this.resume(id);
    }
  }

  /**
   * `runsc pause` stops the sandbox's tasks, but its kernel (the sentry) and gofer keep running and
   * cost as much CPU as an idle sandbox (measured: ~4% of a core each, paused or not). Freezing the
   * sandbox's cgroup stops them too: no CPU at all, and a thaw takes ~10 ms. Without a freezer on
   * this host it falls back to `runsc pause`.
   */
  override async freeze(id: string): Promise<void> {
    if (!(await freezeCgroup(id))) await this.pause(id);
  }

  /** A frozen sandbox cannot answer `runsc resume` (its sentry is stopped): it is thawed first. */
  override async resume(id: string): Promise<void> {
    if (await cgroupFrozen(id)) return thawCgroup(id);
    await super.resume(id);
  }

  /**
   * A frozen sandbox is paused. `runsc state` is not asked then: it waits on the stopped sentry
   * (measured: past a 15 s deadline), and runsc's own record would say running anyway.
   */
  override async status(id: string): Promise<ContainerStatus> {
    if (await cgroupFrozen(id)) return 'paused';
    return super.status(id);
  }

  /**
   * `runsc restore` is create and start from an image. It runs under the shim like create, so the
   * restored sandbox's processes are reaped; --detach returns once it runs (its stdio is the shim's log
   * file, never a pipe the call would wait on). gVisor kills every process that `exec` started (their
   * caller is gone): only the init and its descendants come back. The network is that of the namespace
   * given now: gVisor takes the link's addresses and routes at restore, not those in the image.
   */
  override async restore(given: ContainerSpec, dir: string): Promise<RuntimeState> {
    const spec = await withRootfsTmp(given);
    try {
      const pidFile = await this.startUnderShim(spec, 'restore', ['--image-path', dir, '--detach']);
      return await this.stateFrom(pidFile);
    } catch (e) {
      await this.delete(spec.id, spec.bundleDir).catch(() => {});
      throw e;
    }
  }

  protected pidFileArgs(pidFile: string): string[] {
    return ['--internal-pid-file', pidFile];
  }

  protected async sandboxPid(fromPidFile: number): Promise<number> {
    return fromPidFile;
  }

  protected async signalProcess(id: string, pid: number, _host: number, sig: NodeJS.Signals): Promise<void> {
    // `--pid 0` would mean the container's init: signalling one process must never take the sandbox down.
    if (!(pid > 0)) throw new Error(`refusing to signal pid ${pid} in sandbox ${id}`);
    await this.cli(['kill', '--pid', String(pid), id, sig]);
  }
}

/** runsc prints its error on the first line (and, when the save itself panicked, a goroutine dump after it). */
function checkpointError(id: string, output: string): Error {
  const first = output.trim().split('\n')[0].replace(/:\s*$/, '');
  const net = /unsupported networking state: (.*)$/.exec(first);
  if (net) {
    return new CordonError(
      'invalid_state',
      `checkpoint: gVisor cannot save sandbox ${id} while it holds TCP connections (${net[1]}); close them and retry (a closed connection can take up to a minute to be released). The sandbox runs on unchanged`,
      { sandbox_id: id },
    );
  }
  return new Error(`runsc checkpoint of ${id} failed: ${first}; the sandbox runs on unchanged`);
}

/** Put the directory `from` at `to`, replacing what was there. */
async function replaceDir(from: string, to: string): Promise<void> {
  const old = `${to}.old`;
  await rm(old, { recursive: true, force: true });
  await rename(to, old).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
  });
  await rename(from, to);
  await rm(old, { recursive: true, force: true });
}
