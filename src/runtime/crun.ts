import { readFile } from 'node:fs/promises';
import { capabilitiesOf } from './capabilities.js';
import { OciCliRuntime } from './oci-cli.js';
import type { RuntimeCapabilities } from './types.js';

/** Pid inside the sandbox's pid namespace, from the host pid (last NSpid entry). */
async function nsPid(hostPid: number): Promise<number> {
  try {
    const status = await readFile(`/proc/${hostPid}/status`, 'utf8');
    const line = status.split('\n').find((l) => l.startsWith('NSpid:'));
    const parts = line?.split(/\s+/).filter(Boolean) ?? [];
    return Number(parts[parts.length - 1]) || hostPid;
  } catch {
    return hostPid;
  }
}

/** Namespaces + seccomp + cgroups through runc's command line: native speed, shared kernel. */
export class RuncRuntime extends OciCliRuntime {
  readonly name: 'runc' | 'crun' = 'runc';
  readonly capabilities: RuntimeCapabilities = capabilitiesOf('runc');
  // A shared kernel: syscalls are filtered with Docker's default profile (see src/runtime/seccomp/).
  protected override readonly seccomp = true;

  protected command(_sub: string): [string, string[]] {
    return [this.binary('runc'), [`--root=${this.stateRoot}`]];
  }

  protected pidsLimit(requested: number): number {
    return requested;
  }

  protected pidFileArgs(pidFile: string): string[] {
    return ['--pid-file', pidFile];
  }

  protected sandboxPid(hostPid: number): Promise<number> {
    return nsPid(hostPid);
  }

  protected async signalProcess(_id: string, _pid: number, hostPid: number, sig: NodeJS.Signals): Promise<void> {
    try {
      process.kill(hostPid, sig);
    } catch {
      /* already gone */
    }
  }
}

// crun refuses "hybrid" cgroups when the cgroup2 mount holds a controller (hugetlb here). Running it in
// a private mount namespace with that mount hidden fixes it without touching the host (HOST-NOTES).
const HIDE_UNIFIED = 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$0" "$@"';
const NEEDS_CGROUPS = new Set(['create', 'run', 'delete', 'update', 'pause', 'resume', 'kill', 'state', 'list']);

export class CrunRuntime extends RuncRuntime {
  override readonly name = 'crun' as const;
  override readonly capabilities = capabilitiesOf('crun');

  protected override command(sub: string): [string, string[]] {
    const base = [this.binary('crun'), `--root=${this.stateRoot}`];
    if (!NEEDS_CGROUPS.has(sub)) return [base[0], base.slice(1)];
    return ['unshare', ['-m', '--propagation', 'private', '/bin/sh', '-c', HIDE_UNIFIED, ...base]];
  }
}
