import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './daemon.js';

/** A real Docker distribution registry (Debian's docker-registry) on loopback, optionally with htpasswd auth. */
export interface TestRegistry {
  host: string;
  dir: string;
  proc: ChildProcess;
  auth?: { username: string; password: string };
  /** Path of a blob's data file in the registry's storage (to corrupt it). */
  blobPath(digest: string): string;
  kill(signal?: NodeJS.Signals): Promise<void>;
  restart(): Promise<void>;
  cleanup(): Promise<void>;
}

export async function startRegistry(name: string, opts: { auth?: { username: string; password: string } } = {}): Promise<TestRegistry> {
  const port = await freePort();
  const dir = `/var/lib/cordon-test/registry-${name}-${process.pid}`;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'storage'), { recursive: true });
  let auth = '';
  if (opts.auth) {
    const r = spawnSync('htpasswd', ['-Bbn', opts.auth.username, opts.auth.password], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`htpasswd failed: ${r.stderr}`);
    writeFileSync(join(dir, 'htpasswd'), r.stdout);
    auth = `auth:\n  htpasswd:\n    realm: cordon-test\n    path: ${join(dir, 'htpasswd')}\n`;
  }
  const config = `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'storage')}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n${auth}`;
  writeFileSync(join(dir, 'config.yml'), config);
  const host = `127.0.0.1:${port}`;
  let proc!: ChildProcess;
  const launch = async () => {
    proc = spawn('/usr/bin/docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    proc.stderr!.on('data', (d) => (err += d));
    for (let i = 0; i < 100; i++) {
      if (proc.exitCode !== null) throw new Error(`docker-registry exited: ${err}`);
      const ok = await fetch(`http://${host}/v2/`).then((r) => r.status === 200 || r.status === 401, () => false);
      if (ok) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`docker-registry did not start: ${err}`);
  };
  await launch();
  const reg: TestRegistry = {
    host,
    dir,
    get proc() {
      return proc;
    },
    auth: opts.auth,
    blobPath: (digest) => {
      const hex = digest.replace('sha256:', '');
      return join(dir, 'storage', 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
    },
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill(signal);
      await gone;
    },
    async restart() {
      await launch();
    },
    async cleanup() {
      await reg.kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return reg;
}
