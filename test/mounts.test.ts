// Host mounts (Docker's --mount) on every runtime: bind read-write and read-only, overlay (the host
// directory never changes), tmpfs with a size; --allow-mount-root refusals; and symlinks in the host
// directory, which must resolve inside the sandbox, never on the host.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { randomBytes } from 'node:crypto';
import type { Sandbox } from '../src/sdk/index.js';
import { cli, RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { mountsMentioning, rejectsWith } from './helpers/assert.js';

const base = `/tmp/cordon-mounts-${process.pid}`;
const root = join(base, 'root');
const outside = join(base, 'outside');
const secret = `host-secret-${randomBytes(8).toString('hex')}`;
let d: TestDaemon;
let bare: TestDaemon;

const snapshot = (dir: string) => readdirSync(dir).sort().join(',');

before(async () => {
  rmSync(base, { recursive: true, force: true });
  mkdirSync(join(root, 'proj'), { recursive: true });
  mkdirSync(join(root, 'ov'), { recursive: true });
  mkdirSync(outside, { recursive: true });
  writeFileSync(join(outside, 'secret.txt'), secret);
  writeFileSync(join(root, 'proj', 'hello.txt'), 'hello\n');
  writeFileSync(join(root, 'ov', 'keep.txt'), 'original\n');
  symlinkSync('/etc', join(root, 'proj', 'etc-link'));
  symlinkSync(join(outside, 'secret.txt'), join(root, 'proj', 'secret-link'));
  symlinkSync(outside, join(root, 'escape'));
  // The daemon's own data directory is under an allowed root too: mounting it must still be refused.
  d = await startDaemon('mounts', { args: ['--allow-mount-root', root, '--allow-mount-root', `/var/lib/cordon-test/mounts-${process.pid}`] });
  bare = await startDaemon('mounts-bare');
});
after(async () => {
  for (const t of [d, bare]) {
    for (const s of await t?.client.list().catch(() => []) ?? []) await t.client.remove(s.id, { force: true }).catch(() => {});
    assert.deepEqual(mountsMentioning(t.dataDir), [], 'no staging mount stays behind');
    await t?.cleanup();
  }
  assert.equal(readFileSync(join(outside, 'secret.txt'), 'utf8'), secret);
  rmSync(base, { recursive: true, force: true });
});

const sh = (s: Sandbox, script: string, user?: string) => s.exec(['sh', '-c', script], user ? { user } : {});

describe('mount refusals', () => {
  test('no --allow-mount-root: every host mount is refused, naming the flag', async () => {
    await rejectsWith(bare.client.create({ mounts: [{ type: 'bind', source: join(root, 'proj'), target: '/w' }] }), 'permission_denied', /--allow-mount-root/);
    const r = await cli(bare, ['create', '--mount', `type=bind,src=${root}/proj,dst=/w`]);
    assert.equal(r.code, 77, r.stderr);
    assert.match(r.stderr, /--allow-mount-root/);
    assert.equal((await bare.client.list()).length, 0, 'nothing was created');
  });

  test('outside the roots, through a symlink out of a root, missing, or bad fields', async () => {
    await rejectsWith(d.client.create({ mounts: [{ type: 'bind', source: outside, target: '/w' }] }), 'permission_denied', /not under an allowed mount root/);
    await rejectsWith(d.client.create({ mounts: [{ type: 'bind', source: join(root, 'escape'), target: '/w' }] }), 'permission_denied', /not under an allowed mount root/);
    await rejectsWith(d.client.create({ mounts: [{ type: 'overlay', source: `${root}/../outside`, target: '/w' }] }), 'permission_denied');
    await rejectsWith(d.client.create({ mounts: [{ type: 'bind', source: join(root, 'missing'), target: '/w' }] }), 'invalid_argument', /does not exist/);
    await rejectsWith(d.client.create({ mounts: [{ type: 'bind', source: d.dataDir, target: '/w', read_only: true }] }), 'permission_denied', /daemon's own data/);
    await rejectsWith(d.client.create({ mounts: [{ type: 'bind', source: join(root, 'proj', 'hello.txt'), target: '/w' }] }), 'invalid_argument', /not a directory/);
    await rejectsWith(d.client.create({ mounts: [{ type: 'bind', source: join(root, 'proj'), target: '/dev/x' }] }), 'invalid_argument', /\/dev/);
    await rejectsWith(d.client.create({ mounts: [{ type: 'bind', target: '/w' }] }), 'invalid_argument', /source/);
    const bad = await cli(d, ['create', '--mount', 'type=nfs,src=/x,dst=/y']);
    assert.equal(bad.code, 64);
    assert.match(bad.stderr, /bind, overlay or tmpfs/);
    assert.equal((await d.client.list()).length, 0, 'nothing was created');
  });
});

for (const runtime of RUNTIMES) {
  describe(`host mounts on ${runtime}`, () => {
    let s: Sandbox;
    before(async () => {
      s = await d.client.create({
        runtime,
        hostname: `mnt-${runtime}`,
        mounts: [
          { type: 'bind', source: join(root, 'proj'), target: '/work' },
          { type: 'bind', source: join(root, 'proj'), target: '/work-ro', read_only: true },
          { type: 'overlay', source: join(root, 'ov'), target: '/ov' },
          { type: 'tmpfs', target: '/scratch', tmpfs_size: '8m' },
        ],
      });
    });
    after(async () => {
      await s?.remove().catch(() => {});
    });

    test('bind read-write reaches the host directory; read-only gets EROFS', async () => {
      assert.equal((await sh(s, 'cat /work/hello.txt')).stdout, 'hello\n');
      const w = await sh(s, `echo from-${runtime} > /work/new-${runtime}.txt`);
      assert.equal(w.exit_code, 0, w.stderr);
      assert.equal(readFileSync(join(root, 'proj', `new-${runtime}.txt`), 'utf8'), `from-${runtime}\n`);
      const ro = await sh(s, 'echo x > /work-ro/nope.txt');
      assert.notEqual(ro.exit_code, 0);
      assert.match(ro.stderr, /Read-only file system/);
      assert.equal(existsSync(join(root, 'proj', 'nope.txt')), false);
    });

    test('overlay: the sandbox sees its writes, the host directory never changes', async () => {
      const before = snapshot(join(root, 'ov'));
      const w = await sh(s, 'echo changed > /ov/keep.txt && echo new > /ov/added.txt && rm -f /ov/keep.txt && echo again > /ov/keep.txt && cat /ov/keep.txt /ov/added.txt');
      assert.equal(w.stdout, 'again\nnew\n', w.stderr);
      assert.equal(readFileSync(join(root, 'ov', 'keep.txt'), 'utf8'), 'original\n');
      assert.equal(snapshot(join(root, 'ov')), before);
    });

    test('tmpfs with a size', async () => {
      const r = await sh(s, 'dd if=/dev/zero of=/scratch/f bs=1M count=16 2>&1; echo rc=$?');
      assert.match(r.stdout, /No space left on device/);
    });

    test('symlinks in the host directory resolve inside the sandbox', async () => {
      const leak = await sh(s, 'cat /work/secret-link 2>&1; cat /work/etc-link/hostname');
      assert.ok(!leak.stdout.includes(secret), 'a link to a host file does not reach it');
      assert.match(leak.stdout, new RegExp(`mnt-${runtime}`), "/etc through the link is the sandbox's /etc");
      const write = await sh(s, 'echo pwned > /work/etc-link/cordon-test-escape 2>&1; echo done');
      assert.match(write.stdout, /done/);
      assert.equal(existsSync('/etc/cordon-test-escape'), false, "nothing was written to the host's /etc");
      // A link the sandbox plants in a bound directory cannot become the source of a later mount.
      assert.equal((await sh(s, `ln -s / /work/evil-${runtime} && ln -s ${outside} /work/evil2-${runtime} && echo ok`)).stdout, 'ok\n');
      await rejectsWith(d.client.create({ runtime, mounts: [{ type: 'bind', source: join(root, 'proj', `evil-${runtime}`), target: '/w' }] }), 'permission_denied');
      await rejectsWith(d.client.create({ runtime, mounts: [{ type: 'overlay', source: join(root, 'proj', `evil2-${runtime}`), target: '/w' }] }), 'permission_denied');
    });

    test('stop and start keep the mounts and the overlay writes; removal leaves the host directories intact', async () => {
      await s.stop();
      assert.deepEqual(mountsMentioning(join(d.dataDir, 'mounts', s.id)), [], 'stopped: staging mounts are released');
      await s.start();
      assert.equal((await sh(s, 'cat /ov/added.txt /work/hello.txt')).stdout, 'new\nhello\n');
      await s.remove();
      assert.deepEqual(mountsMentioning(s.id), []);
      assert.equal(readFileSync(join(root, 'proj', 'hello.txt'), 'utf8'), 'hello\n', 'removing the sandbox deleted nothing of the bound directory');
      assert.equal(readFileSync(join(root, 'ov', 'keep.txt'), 'utf8'), 'original\n');
      assert.equal(existsSync(join(d.dataDir, 'mounts', s.id)), false, 'the staging directories are gone');
    });

    test('cordon run --mount', async () => {
      const r = await cli(d, ['run', '--runtime', runtime, '--mount', `type=bind,src=${root}/proj,dst=/p,readonly`, '--', 'cat', '/p/hello.txt']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'hello\n');
    });
  });
}
