// A template build killed half-way leaves mmdebstrap's mounts (proc, tmpfs) in its staging tree; the
// next build sweeps such trees without walking into those mounts, and leaves a live builder's alone.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { sweepStaleStaging } from '../src/image/staging-dir.js';

const dir = `/var/lib/cordon-test/staging-dir-${process.pid}`;
const target = join(dir, 'base-0123');
const mounted = (p: string) => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === p);

after(() => {
  for (const m of [join(target + '.partial-1', 'rootfs', 'proc')]) if (mounted(m)) execFileSync('umount', ['-l', m]);
  rmSync(dir, { recursive: true, force: true });
});

test('stale staging trees are unmounted and removed; a live builder keeps its own', () => {
  const dead = `${target}.partial-999999999`;
  const live = `${target}.partial-1`; // pid 1 is alive
  for (const d of [dead, live]) mkdirSync(join(d, 'rootfs', 'proc'), { recursive: true });
  mkdirSync(join(dead, 'rootfs', 'dev', 'shm'), { recursive: true });
  execFileSync('mount', ['-t', 'proc', '-o', 'ro', 'proc', join(dead, 'rootfs', 'proc')]);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', join(dead, 'rootfs', 'dev', 'shm')]);
  writeFileSync(join(dead, 'rootfs', 'dev', 'shm', 'x'), 'x');
  return sweepStaleStaging(target).then(() => {
    assert.equal(existsSync(dead), false, 'the dead builder\'s tree is removed');
    assert.equal(mounted(join(dead, 'rootfs', 'proc')), false);
    assert.equal(mounted(join(dead, 'rootfs', 'dev', 'shm')), false);
    assert.equal(existsSync(live), true, 'a live builder\'s tree is kept');
    assert.ok(existsSync('/proc/self/status'), 'the host /proc is untouched');
  });
});
