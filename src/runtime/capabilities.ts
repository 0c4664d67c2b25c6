import type { RuntimeName } from '../config.js';
import type { RuntimeCapabilities } from './types.js';

// What each backend declares it can do (README "Runtimes"). Kept free of the backends' code so the
// daemon's defaults (config.ts) can read it without loading them.

/** gVisor: a kernel of its own in user space. */
function runsc(platform: 'systrap' | 'ptrace'): RuntimeCapabilities {
  return {
    // `runsc checkpoint` / `runsc restore` keep memory and processes (HOST-NOTES).
    checkpoint: 'memory',
    fsSnapshot: true,
    liveMemoryUpdate: true,
    terminalResize: 'native',
    // The sentry's own threads count against the pids cgroup and it panics when starved (HOST-NOTES).
    processLimit: 'rlimit',
    seccomp: 'sandbox-kernel',
    networkLink: 'at-start',
    readsAccountFiles: false,
    // An idle sandbox costs ~2% of a core on systrap and ~0.3% on ptrace (HOST-NOTES): about half
    // the machine goes to idle overhead at these counts.
    sandboxesPerCore: platform === 'ptrace' ? 150 : 25,
  };
}

/** Namespaces, cgroups and seccomp on the host kernel (runc, crun). */
function hostKernel(terminalResize: RuntimeCapabilities['terminalResize'], readsAccountFiles: boolean): RuntimeCapabilities {
  return {
    // CRIU 3.17 (Debian 12) fails on this kernel; CRIU 4.x would be needed (HOST-NOTES).
    checkpoint: 'none',
    fsSnapshot: true,
    liveMemoryUpdate: true,
    terminalResize,
    processLimit: 'cgroup',
    seccomp: 'profile',
    networkLink: 'live',
    readsAccountFiles,
    // Idle containers cost next to nothing; this bounds kernel objects per core.
    sandboxesPerCore: 100,
  };
}

/** The capabilities of a backend, as its implementation declares them. */
export function capabilitiesOf(name: RuntimeName, runscPlatform: 'systrap' | 'ptrace' = 'systrap'): RuntimeCapabilities {
  switch (name) {
    case 'runsc':
      return runsc(runscPlatform);
    case 'crun':
      // crun relays the terminal through a pty of its own and does not pass a new size on.
      // crun is given HOME for its init and so never reads the account files itself.
      return hostKernel('in-sandbox', false);
    case 'runc':
      return hostKernel('native', true);
  }
}
