import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Cordon } from '../../src/sdk/index.js';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const CLI = join(REPO, 'bin', 'cordon.js');
/** Every test daemon shares one built `base` template so it is built once per machine. */
export const TEMPLATES_DIR = process.env.CORDON_TEST_TEMPLATES ?? '/var/lib/cordon-test/templates';

/**
 * The agent suites need the agent this build made; a host without Go >= 1.23 builds none (npm run build
 * warns) and the daemon uses the exec path, which every other suite covers. Their `skip` says why.
 */
export const AGENT_MISSING = ['cordon-agent', 'cordon-supervise'].every((f) => existsSync(join(REPO, 'dist', 'agent', f)))
  ? false
  : 'no sandbox agent was built (no Go >= 1.23 on this host; see npm run build output)';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

export interface TestDaemon {
  url: string;
  dataDir: string;
  apiKey?: string;
  proc: ChildProcess;
  client: Cordon;
  log: () => string;
  /** Stop gracefully (SIGTERM) or crash it (SIGKILL). */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Start again on the same port and data directory. */
  /** Start it again on the same data directory (with other serve arguments, when given). */
  restart(args?: string[]): Promise<void>;
  /** Remove the data directory (after stop). */
  cleanup(): Promise<void>;
}

/**
 * The test machine is shared and often saturated by other builds, which CPU-pressure admission would
 * rightly answer with 503s; suites that test admission pass their own --max-cpu-pressure (later flags win).
 */
const TEST_HOST_ARGS = ['--max-cpu-pressure', '0'];

/** Start `cordon serve` the way the README does, on a free loopback port with its own data dir. */
export async function startDaemon(name: string, opts: { args?: string[]; apiKey?: string; env?: Record<string, string> } = {}): Promise<TestDaemon> {
  const port = await freePort();
  const dataDir = `/var/lib/cordon-test/${name}-${process.pid}`;
  rmSync(dataDir, { recursive: true, force: true });
  mkdirSync(dataDir, { recursive: true });
  const url = `http://127.0.0.1:${port}`;
  let logText = '';
  let proc!: ChildProcess;
  let args = opts.args ?? [];
  const launch = async () => {
    proc = spawn(process.execPath, [CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--templates-dir', TEMPLATES_DIR, ...TEST_HOST_ARGS, ...args], {
      env: { ...process.env, ...(opts.apiKey ? { CORDON_API_KEY: opts.apiKey } : {}), ...(opts.env ?? {}) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc.stdout!.on('data', (d) => (logText += d));
    proc.stderr!.on('data', (d) => (logText += d));
    await waitHealthy(url, proc, () => logText);
  };
  try {
    await launch();
  } catch (e) {
    proc.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
  const d: TestDaemon = {
    url,
    dataDir,
    apiKey: opts.apiKey,
    get proc() {
      return proc;
    },
    client: new Cordon({ url, apiKey: opts.apiKey }),
    log: () => logText,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill(signal);
      await exited;
    },
    async restart(newArgs?: string[]) {
      if (newArgs) args = newArgs;
      await launch();
    },
    async cleanup() {
      await d.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return d;
}

/** Wait for /v1/health to answer 200; the first start on a machine builds `base` (about a minute). */
async function waitHealthy(url: string, proc: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 10 * 60_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`daemon exited (${proc.exitCode}):\n${log()}`);
    try {
      const res = await fetch(`${url}/v1/health`);
      if (res.status === 200) return;
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`daemon did not become healthy:\n${log()}`);
}

/** Run the CLI against a daemon; resolves with its exit code and output. */
export function cli(d: { url: string; apiKey?: string }, args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, CORDON_URL: d.url, ...(d.apiKey ? { CORDON_API_KEY: d.apiKey } : {}) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (x) => (stdout += x));
    p.stderr.on('data', (x) => (stderr += x));
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    p.stdin.end(input ?? '');
  });
}

/** Runtimes the acceptance suite runs on; CORDON_TEST_RUNTIMES narrows it (e.g. "crun"). */
export const RUNTIMES = (process.env.CORDON_TEST_RUNTIMES ?? 'runsc,crun').split(',') as ('runsc' | 'crun' | 'runc')[];
/** The lifecycle and exec suites also cover runc (the other suites keep to RUNTIMES to bound the run time). */
export const RUNTIMES_WITH_RUNC: typeof RUNTIMES = process.env.CORDON_TEST_RUNTIMES ? RUNTIMES : [...RUNTIMES, 'runc'];
