// Named volumes on every runtime: sharing (one sandbox read-only), the size limit, persistence across
// sandbox removal and a daemon restart, rm refused while mounted, cp both ways, and hostile content
// (links, FIFOs) read and written from the host through the API, which must never follow or open them.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { cli, RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { mountsMentioning, rejectsWith } from './helpers/assert.js';

let d: TestDaemon;
const local = mkdtempSync(join(tmpdir(), 'cordon-vol-'));
const shadowHash = () => createHash('sha256').update(readFileSync('/etc/shadow')).digest('hex');
const shadowBefore = shadowHash();

before(async () => {
  d = await startDaemon('volumes');
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  for (const v of await d.client.volumes.list().catch(() => [])) await d.client.volumes.remove(v.name, { force: true }).catch(() => {});
  assert.deepEqual(mountsMentioning(d.dataDir), [], 'no volume stays mounted once removed');
  await d.cleanup();
  rmSync(local, { recursive: true, force: true });
  assert.equal(shadowHash(), shadowBefore, "the host's /etc/shadow is unchanged");
});

const sh = async (s: Sandbox, script: string) => s.exec(['sh', '-c', script]);

describe('volume lifecycle', () => {
  test('create, ls, inspect, refusals', async () => {
    const v = await d.client.volumes.create('life', { size: '32m', labels: { team: 'a' } });
    assert.equal(v.name, 'life');
    assert.match(v.id, /^vol-/);
    assert.equal(v.size, 32 * 1024 * 1024);
    assert.deepEqual(v.mounted_by, []);
    assert.ok((await d.client.volumes.list()).some((x) => x.id === v.id));
    assert.equal((await d.client.volumes.inspect(v.id)).name, 'life', 'inspect by id');
    await rejectsWith(d.client.volumes.create('life'), 'already_exists');
    await rejectsWith(d.client.volumes.create('../x'), 'invalid_argument', /name/);
    await rejectsWith(d.client.volumes.create('tiny', { size: '1m' }), 'invalid_argument', /size/);
    await rejectsWith(d.client.volumes.inspect('nope'), 'not_found');
    await rejectsWith(d.client.create({ volumes: [{ name: 'nope', path: '/data' }] }), 'not_found', /volume nope/);
    await rejectsWith(d.client.create({ volumes: [{ name: 'life', path: '/proc/x' }] }), 'invalid_argument', /\/proc/);
    await rejectsWith(d.client.create({ volumes: [{ name: 'life', path: '/a' }, { name: 'life', path: '/a' }] }), 'invalid_argument');
    const cliLs = await cli(d, ['volume', 'ls', '--json']);
    assert.equal(cliLs.code, 0, cliLs.stderr);
    assert.ok(JSON.parse(cliLs.stdout).some((x: { name: string }) => x.name === 'life'));
    const rm = await cli(d, ['volume', 'rm', 'life']);
    assert.equal(rm.code, 0, rm.stderr);
    await rejectsWith(d.client.volumes.inspect('life'), 'not_found');
  });
});

for (const runtime of RUNTIMES) {
  describe(`volumes on ${runtime}`, () => {
    const name = `shared-${runtime}`;
    let a: Sandbox;
    let b: Sandbox;
    before(async () => {
      await d.client.volumes.create(name, { size: '32m' });
      a = await d.client.create({ runtime, volumes: [{ name, path: '/data' }] });
      b = await d.client.create({ runtime, volumes: [{ name, path: '/data', read_only: true }] });
    });
    after(async () => {
      await a?.remove().catch(() => {});
      await b?.remove().catch(() => {});
    });

    test('two sandboxes share it; the read-only one gets EROFS', async () => {
      assert.deepEqual(a.info.config.volumes.map((v) => [v.name, v.path, v.read_only]), [[name, '/data', false]]);
      const w = await sh(a, 'echo from-a > /data/a.txt && cat /data/a.txt');
      assert.equal(w.exit_code, 0, w.stderr);
      const r = await sh(b, 'cat /data/a.txt');
      assert.equal(r.stdout, 'from-a\n', 'b sees what a wrote');
      const ro = await sh(b, 'echo x > /data/b.txt');
      assert.notEqual(ro.exit_code, 0);
      assert.match(ro.stderr, /Read-only file system/);
      const user = await s_user(a);
      assert.equal(user.exit_code, 0, `any user may create files in the volume root: ${user.stderr}`);
      assert.deepEqual((await d.client.volumes.inspect(name)).mounted_by.sort(), [a.id, b.id].sort());
    });

    test('the size is enforced (ENOSPC)', async () => {
      const r = await sh(a, 'dd if=/dev/zero of=/data/big bs=1M count=64 2>&1; echo rc=$?');
      assert.match(r.stdout, /No space left on device/);
      assert.match(r.stdout, /rc=1/);
      assert.equal((await sh(a, 'rm /data/big')).exit_code, 0);
    });

    test('rm is refused while mounted; content survives sandbox removal and a daemon restart', async () => {
      await rejectsWith(d.client.volumes.remove(name), 'invalid_state', /mounted by/);
      await a.remove();
      await b.remove();
      await d.stop();
      await d.restart();
      assert.ok((await d.client.volumes.list()).some((v) => v.name === name), 'the volume is still there after a restart');
      assert.equal(await d.client.volumes.files(name).readText('/a.txt'), 'from-a\n');
      a = await d.client.create({ runtime, volumes: [{ name, path: '/mnt/v' }] });
      assert.equal((await sh(a, 'cat /mnt/v/a.txt')).stdout, 'from-a\n', 'a new sandbox sees the old content');
    });

    test('files from outside: API, SDK and cordon volume cp both ways', async () => {
      const files = d.client.volumes.files(name);
      const blob = randomBytes(300_000);
      const src = join(local, `in-${runtime}.bin`);
      writeFileSync(src, blob);
      const up = await cli(d, ['volume', 'cp', src, `${name}:/up/in.bin`]);
      assert.equal(up.code, 0, up.stderr);
      assert.equal((await sh(a, 'sha256sum /mnt/v/up/in.bin')).stdout.split(' ')[0], createHash('sha256').update(blob).digest('hex'));
      assert.equal((await sh(a, 'echo made-inside > /mnt/v/up/out.txt')).exit_code, 0);
      const dst = join(local, `out-${runtime}.txt`);
      const down = await cli(d, ['volume', 'cp', `${name}:/up/out.txt`, dst]);
      assert.equal(down.code, 0, down.stderr);
      assert.equal(readFileSync(dst, 'utf8'), 'made-inside\n');
      const st = await files.stat('/up/in.bin');
      assert.equal(st.type, 'file');
      assert.equal(st.size, blob.length);
      await files.mkdir('/m/n', { mode: 0o750 });
      assert.equal((await files.stat('/m/n')).mode, 0o750);
      const listed = await files.list('/', { depth: 2 });
      assert.ok(listed.some((e) => e.path === '/up/in.bin'));
      assert.ok(listed.some((e) => e.path === '/m/n' && e.type === 'dir'));
      await files.setMetadata('/up/in.bin', { mode: 0o600, uid: 1000 });
      assert.match((await sh(a, 'stat -c %a:%u /mnt/v/up/in.bin')).stdout, /^600:1000/);
      await files.remove('/m');
      await rejectsWith(files.stat('/m'), 'not_found');
      await rejectsWith(files.read('/up/../a.txt'), 'invalid_argument', /\.\./);
    });

    test('hostile content: links are not followed, FIFOs and devices never opened', async () => {
      const r = await sh(a, 'cd /mnt/v && ln -s /etc/shadow shadow && ln -s / root && ln -s up uplink && mkfifo fifo && echo ok');
      assert.equal(r.stdout, 'ok\n', r.stderr);
      // gVisor keeps a FIFO made inside on a gofer mount in the sandbox kernel (the host sees no file);
      // crun's is a real one. Make a FIFO and a device node in the volume from the host too.
      const hostDir = join(d.dataDir, 'volumes', (await d.client.volumes.inspect(name)).id, 'mnt', 'data');
      execFileSync('mkfifo', [join(hostDir, 'hostfifo')]);
      execFileSync('mknod', [join(hostDir, 'hostdev'), 'c', '1', '3']);
      const files = d.client.volumes.files(name);
      await rejectsWith(files.read('/hostfifo'), 'invalid_argument', /FIFO/);
      await rejectsWith(files.read('/hostdev'), 'invalid_argument', /device/);
      await assert.rejects(files.read('/fifo'), 'the FIFO made inside is never opened');
      await rejectsWith(files.read('/shadow'), 'invalid_argument', /symbolic link/);
      await rejectsWith(files.read('/root/etc/shadow'), 'invalid_argument', /symbolic link/);
      await rejectsWith(files.read('/uplink/in.bin'), 'invalid_argument', /symbolic link/);
      await rejectsWith(files.write('/root/etc/cordon-escape', 'x'), 'invalid_argument', /symbolic link/);
      await rejectsWith(files.setMetadata('/shadow', { mode: 0o777 }), 'invalid_argument', /symbolic link/);
      await rejectsWith(files.mkdir('/root/tmp/x'), 'invalid_argument');
      const link = await files.stat('/shadow');
      assert.equal(link.type, 'symlink');
      assert.equal(link.symlink_target, '/etc/shadow');
      // A write over a link or a FIFO replaces it (never opens what is there).
      await files.write('/shadow', 'replaced');
      await files.write('/hostfifo', 'no longer a fifo');
      assert.equal((await files.stat('/shadow')).type, 'file');
      assert.equal((await sh(a, 'cat /mnt/v/shadow /mnt/v/hostfifo')).stdout, 'replacedno longer a fifo');
      await files.remove('/hostdev');
      // Removing a link to a directory removes the link, nothing behind it.
      await files.remove('/root');
      await files.remove('/uplink');
      assert.equal((await files.stat('/up/in.bin')).type, 'file', 'the directory a removed link named is untouched');
      assert.equal(shadowHash(), shadowBefore, "the host's /etc/shadow is unchanged");
    });

    test('rm -f while mounted', async () => {
      const r = await cli(d, ['volume', 'rm', '-f', name]);
      assert.equal(r.code, 0, r.stderr);
      await rejectsWith(d.client.volumes.inspect(name), 'not_found');
      await a.remove();
    });
  });
}

/** Create a file in the volume root as the unprivileged user of the base template. */
function s_user(s: Sandbox) {
  return s.exec(['sh', '-c', 'echo u > /data/by-user.txt'], { user: 'user' });
}
