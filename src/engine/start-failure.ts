import { HELPER_DIR } from '../runtime/oci-spec.js';
import type { ExecSpec, Runtime } from '../runtime/types.js';

const BB = `${HELPER_DIR}/busybox`;

// Why a command never started, asked inside the sandbox as the same user with the same PATH and cwd.
// Runtimes report this badly: crun/runc exit 255, and runsc's message is lost because gVisor shuts
// down the stdio sockets it was given, so its own error write dies of SIGPIPE (exit 141).
const DIAGNOSE = [
  'cmd=$1; cwd=$2; PATH=$3',
  `[ -d "$cwd" ] || { echo cwd; exit 0; }`,
  'case "$cmd" in */*) p=$cmd ;; *) p=$(' + BB + ' which "$cmd" 2>/dev/null) ;; esac',
  'if [ -z "$p" ] || [ ! -e "$p" ]; then echo missing; elif [ -d "$p" ] || [ ! -x "$p" ]; then echo noexec; else echo other; fi',
].join('\n');

export interface StartFailure {
  exitCode: number;
  message: string;
}

/** Shell conventions: 127 for a command that does not exist, 126 for one that cannot be executed. */
export async function diagnoseStartFailure(runtime: Runtime, sandboxId: string, spec: ExecSpec): Promise<StartFailure | undefined> {
  const cmd = spec.args[0] ?? '';
  const path = spec.env.find((e) => e.startsWith('PATH='))?.slice(5) ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
  const h = runtime.exec(sandboxId, { ...spec, cwd: '/', args: [BB, 'sh', '-c', DIAGNOSE, 'cordon-diagnose', cmd, spec.cwd, path], tty: undefined, nproc: undefined });
  h.stdin.end();
  let out = '';
  h.stdout.on('data', (d: Buffer) => (out += d));
  h.stderr?.resume();
  const st = await h.exited;
  if (st.exitCode !== 0) return undefined;
  switch (out.trim()) {
    case 'cwd':
      return { exitCode: 126, message: `cordon: working directory ${spec.cwd} does not exist in the sandbox\n` };
    case 'missing':
      return { exitCode: 127, message: `cordon: ${cmd}: command not found\n` };
    case 'noexec':
      return { exitCode: 126, message: `cordon: ${cmd}: permission denied (not an executable file)\n` };
    default:
      return undefined;
  }
}
