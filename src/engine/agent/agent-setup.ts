// Where the agent sits in a sandbox and how the sandbox's init starts it.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HELPER_DIR } from '../../runtime/oci-spec.js';
import { AGENT_SOCKET } from './agent-link.js';

/** The agent this build made (npm run build → dist/agent/cordon-agent). */
export const BUILT_AGENT = fileURLToPath(new URL('../../../agent/cordon-agent', import.meta.url));
/** The agent's supervisor this build made beside it (supervisor/supervise.c); it runs whichever agent binary is given. */
export const BUILT_SUPERVISOR = fileURLToPath(new URL('../../../agent/cordon-supervise', import.meta.url));

/** The agent binary inside the sandbox (a read-only bind mount of the daemon's build). */
export const AGENT_PATH = `${HELPER_DIR}/agent`;
/** The agent's supervisor inside the sandbox (a read-only bind mount of the daemon's build). */
export const SUPERVISOR_PATH = `${HELPER_DIR}/supervise`;
/** The directory holding the daemon's socket inside the sandbox (read-only bind mount). */
export const AGENT_RUN_DIR = `${HELPER_DIR}/run`;

/**
 * The container's init with the agent: tini (subreaper) runs the agent's supervisor (supervisor/,
 * a small C program: a second Go runtime would cost ~1.8 MiB per sandbox), which restarts the
 * serving agent a second after it exits, so a crashed or killed agent never takes the sandbox down.
 * The agent's processes are its children, inside the init's tree: a runsc restore brings them back
 * (it kills whatever `runsc exec` started).
 */
export const AGENT_INIT = [`${HELPER_DIR}/tini`, '-s', '-g', '--', SUPERVISOR_PATH, AGENT_PATH, 'serve'];

/**
 * Tasks the agent adds to a sandbox's pids cgroup (tini, the supervisor, the agent's threads): a
 * cgroup-limited sandbox gets them on top of its limit, so its own processes still get all of theirs.
 * Counted: tini and the supervisor 2, the agent 12 threads once it has served (its blocking socket
 * reader and five spare threads among them), and a little room.
 */
export const AGENT_PIDS_HEADROOM = 16;

/** Unix socket paths are limited to 107 bytes; past this the socket goes to a short directory under /run. */
const MAX_SOCKET_PATH = 100;

/**
 * The host directory of a sandbox's agent socket: inside the sandbox's own directory (removed with
 * it), or for a long data directory under /run/cordon-agent/<hash of the data directory>/.
 */
export function agentSocketDir(sandboxRoot: string, dataDir: string, id: string): string {
  const inside = join(sandboxRoot, 'agent');
  if (Buffer.byteLength(join(inside, AGENT_SOCKET)) <= MAX_SOCKET_PATH) return inside;
  return join('/run/cordon-agent', createHash('sha256').update(dataDir).digest('hex').slice(0, 12), id);
}
