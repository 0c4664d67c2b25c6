import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

// The floor: the same rootfs run by the runtime's own command line with no daemon in between.

export function plainBundle(dir: string, rootfs: string, args: string[]): string {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const spec = {
    ociVersion: '1.0.2',
    process: { terminal: false, user: { uid: 0, gid: 0 }, args, env: ['PATH=/usr/bin:/bin'], cwd: '/' },
    root: { path: rootfs, readonly: true },
    hostname: 'floor',
    mounts: [{ destination: '/proc', type: 'proc', source: 'proc' }, { destination: '/tmp', type: 'tmpfs', source: 'tmpfs' }],
    linux: { namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }] },
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(spec));
  return dir;
}

/** Milliseconds from spawn to the first byte of stdout (the command's first output). */
export function timeToFirstOutput(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    let first: number | undefined;
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stdout.once('data', () => (first = performance.now() - t));
    p.stderr.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 && first !== undefined ? resolve(first) : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code} ${err}`))));
  });
}
