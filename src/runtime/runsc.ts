import type { DaemonConfig } from '../config.js';
import { run, runOk } from '../util/proc.js';
import { OciCliRuntime, type RuntimeCallOptions } from './oci-cli.js';
import { HELPER_DIR } from './oci-spec.js';
import type { ContainerSpec, ExecHandle, ExecSpec } from './types.js';

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

/**
 * gVisor. The rootfs is the host overlay the engine mounted (--overlay2=none), so writes land on
 * the sandbox's own upper dir and disk limits hold; the sandbox has no network until policy exists.
 */
export class RunscRuntime extends OciCliRuntime {
  readonly name = 'runsc' as const;
  /** Whether this runsc has --allow-suid (gVisor release-20250820.0 and later). */
  private allowSuid = false;
  constructor(stateRoot: string, calls: RuntimeCallOptions, private readonly platform: DaemonConfig['runscPlatform']) {
    super(stateRoot, calls);
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
  }

  protected command(sub: string, spec?: ContainerSpec): [string, string[]] {
    const flags = [`--root=${this.stateRoot}`, `--platform=${this.platform}`, '--overlay2=none'];
    if (this.allowSuid) flags.push('--allow-suid');
    const runsc = this.binary('runsc');
    if (!((sub === 'create' || sub === 'start') && spec?.netnsPath)) return [runsc, [...flags, '--network=none']];
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
