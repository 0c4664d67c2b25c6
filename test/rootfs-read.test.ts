// Unit tests of the host-side reads of a sandbox rootfs: the in-root file reader (symlink escapes,
// FIFOs, devices, sockets, huge files, a directory swapped for a symlink mid-walk) and user lookup
// (resolveUser) on top of it. Real files in a temporary directory; no daemon, no sandbox.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { resolveUser } from '../src/engine/users.js';
import { InRootError, readFileInRoot, stampsInTopDir, statInRoot, type InRootProblem } from '../src/util/read-in-root.js';

const MiB = 1024 * 1024;
let tmp: string;
let root: string;
let outside: string;
let sock: Server;

const mkfifo = (p: string) => assert.equal(spawnSync('mkfifo', [p]).status, 0);

async function problem(p: Promise<unknown>): Promise<InRootProblem> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof InRootError, `expected an InRootError, got ${(e as Error).message}`);
    return e.problem;
  }
  assert.fail('expected the read to be refused');
}

before(async () => {
  tmp = mkdtempSync('/var/lib/cordon-test/rootfs-read-');
  root = join(tmp, 'root');
  outside = join(tmp, 'outside');
  mkdirSync(join(root, 'etc', 'ssl'), { recursive: true });
  mkdirSync(join(root, 'd'));
  mkdirSync(outside);
  writeFileSync(join(outside, 'secret'), 'OUTSIDE\n');
  writeFileSync(join(outside, 'f'), 'OUTSIDE\n');
  writeFileSync(join(root, 'd', 'f'), 'INSIDE\n');
  writeFileSync(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(join(root, 'etc', 'shadow'), 'in-root shadow\n');
  symlinkSync('/etc/shadow', join(root, 'etc', 'abs'));
  symlinkSync('../../../../../../../etc/shadow', join(root, 'etc', 'rel'));
  symlinkSync(join(outside, 'secret'), join(root, 'etc', 'host-abs'));
  symlinkSync('../../outside/secret', join(root, 'etc', 'host-rel'));
  symlinkSync('/etc', join(root, 'etc2'));
  symlinkSync('..', join(root, 'up'));
  symlinkSync(outside, join(root, 'hostdir'));
  symlinkSync('loop-b', join(root, 'loop-a'));
  symlinkSync('loop-a', join(root, 'loop-b'));
  mkfifo(join(root, 'etc', 'fifo'));
  symlinkSync('fifo', join(root, 'etc', 'to-fifo'));
  assert.equal(spawnSync('mknod', [join(root, 'null'), 'c', '1', '3']).status, 0);
  sock = createServer();
  await new Promise<void>((r) => sock.listen(join(root, 'sock'), r));
  writeFileSync(join(root, 'huge'), '');
  truncateSync(join(root, 'huge'), 200 * MiB);
  writeFileSync(join(root, 'exact'), Buffer.alloc(1024, 'a'));
});

after(() => {
  sock?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('readFileInRoot', () => {
  test('reads a regular file and says where it really is', async () => {
    const f = await readFileInRoot(root, '/etc/passwd', MiB);
    assert.equal(f.data.toString(), 'root:x:0:0:root:/root:/bin/sh\n');
    assert.equal(f.path, '/etc/passwd');
    assert.equal((await readFileInRoot(root, 'etc//./passwd', MiB)).path, '/etc/passwd');
  });

  test('absolute and relative symlinks resolve inside the root, never on the host', async () => {
    for (const p of ['/etc/abs', '/etc/rel', '/etc2/shadow', '/up/up/etc/abs', '/etc/../../etc/shadow']) {
      const f = await readFileInRoot(root, p, MiB);
      assert.equal(f.data.toString(), 'in-root shadow\n', p);
      assert.equal(f.path, '/etc/shadow', p);
    }
    for (const p of ['/etc/host-abs', '/etc/host-rel', '/hostdir/secret']) {
      assert.equal(await problem(readFileInRoot(root, p, MiB)), 'missing', p);
    }
  });

  test('FIFOs, devices, sockets and directories are refused without being opened', async () => {
    for (const p of ['/etc/fifo', '/etc/to-fifo', '/null', '/sock', '/etc', '/']) {
      assert.equal(await problem(readFileInRoot(root, p, MiB)), 'not-regular', p);
    }
    await assert.rejects(readFileInRoot(root, '/etc/fifo', MiB), /\/etc\/fifo in the sandbox is a FIFO, not a regular file/);
  });

  test('a file past the cap is refused without being read; one at the cap is read', async () => {
    assert.equal(await problem(readFileInRoot(root, '/huge', 4 * MiB)), 'too-large');
    assert.equal((await readFileInRoot(root, '/exact', 1024)).data.length, 1024);
    assert.equal(await problem(readFileInRoot(root, '/exact', 1023)), 'too-large');
  });

  test('symlink loops, missing files and files used as directories', async () => {
    assert.equal(await problem(readFileInRoot(root, '/loop-a', MiB)), 'too-many-links');
    assert.equal(await problem(readFileInRoot(root, '/etc/none', MiB)), 'missing');
    assert.equal(await problem(readFileInRoot(root, '/etc/passwd/x', MiB)), 'not-directory');
  });

  test('a directory swapped for a symlink to the host during the walk never leads out', { timeout: 120_000 }, async () => {
    // race/d is atomically exchanged (renameat2 RENAME_EXCHANGE) with a symlink to the outside directory
    // as fast as the flipper can; a reader that checks a path and then opens it by name reads OUTSIDE.
    const race = join(tmp, 'race');
    mkdirSync(join(race, 'd'), { recursive: true });
    writeFileSync(join(race, 'd', 'f'), 'INSIDE\n');
    const flipper = spawn('python3', ['-c', FLIP, race, outside], { stdio: ['ignore', 'pipe', 'inherit'] });
    const seen = { inside: 0, refused: 0 };
    try {
      await new Promise((r) => flipper.stdout!.once('data', r));
      for (let i = 0; i < 3000; i++) {
        try {
          const f = await readFileInRoot(race, '/d/f', MiB);
          assert.equal(f.data.toString(), 'INSIDE\n', 'read a file outside the root');
          seen.inside++;
        } catch (e) {
          if (!(e instanceof InRootError)) throw e;
          seen.refused++;
        }
      }
    } finally {
      flipper.kill('SIGKILL');
    }
    assert.ok(seen.inside > 0 && seen.refused > 0, `the race did not happen (${JSON.stringify(seen)})`);
  });
});

const FLIP = [
  'import ctypes, os, sys',
  'libc = ctypes.CDLL(None, use_errno=True)',
  'os.chdir(sys.argv[1])',
  "os.symlink(sys.argv[2], 'dlink')",
  "print('ready', flush=True)",
  "while libc.renameat2(-100, b'd', -100, b'dlink', 2) == 0: pass",
  "sys.exit('renameat2 failed: %d' % ctypes.get_errno())",
].join('\n');

describe('resolveUser', () => {
  let r: string;
  before(() => {
    r = join(tmp, 'users');
    mkdirSync(join(r, 'etc'), { recursive: true });
  });
  const files = (passwd?: string, group?: string) => {
    for (const f of ['passwd', 'group']) rmSync(join(r, 'etc', f), { force: true });
    if (passwd !== undefined) writeFileSync(join(r, 'etc', 'passwd'), passwd);
    if (group !== undefined) writeFileSync(join(r, 'etc', 'group'), group);
  };
  const ids = async (spec: string) => {
    const u = await resolveUser(r, spec);
    return [u.uid, u.gid, u.home, u.additionalGids];
  };

  test('without /etc/passwd: root by default, numeric users as Docker runs them', async () => {
    files();
    assert.deepEqual(await ids(''), [0, 0, '/', []]);
    assert.deepEqual(await ids('root'), [0, 0, '/', []]);
    assert.deepEqual(await ids('1234'), [1234, 0, '/', []]);
    assert.deepEqual(await ids('1234:5678'), [1234, 5678, '/', []]);
    assert.deepEqual(await ids('root:5'), [0, 5, '/', []]);
    await assert.rejects(resolveUser(r, 'app'), /user: "app" cannot be looked up because the sandbox has no \/etc\/passwd; use a numeric uid/);
    await assert.rejects(resolveUser(r, '1234:wheel'), /group "wheel" cannot be looked up because the sandbox has no \/etc\/group/);
    await assert.rejects(resolveUser(r, '99999999999'), /out of range/);
  });

  test('with /etc/passwd and /etc/group: names, numeric ids, supplementary groups', async () => {
    files('root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n', 'root:x:0:\napp:x:1000:\ndocker:x:998:app,other\nwheel:x:10:\n');
    assert.deepEqual(await ids('root'), [0, 0, '/root', []]);
    assert.deepEqual(await ids('app'), [1000, 1000, '/home/app', [998]]);
    assert.deepEqual(await ids('1000'), [1000, 1000, '/home/app', [998]]);
    assert.deepEqual(await ids('app:wheel'), [1000, 10, '/home/app', []]);
    assert.deepEqual(await ids('app:7'), [1000, 7, '/home/app', []]);
    assert.deepEqual(await ids('4242'), [4242, 0, '/', []]);
    await assert.rejects(resolveUser(r, 'nobody'), /user: "nobody" does not exist in the sandbox's \/etc\/passwd/);
    await assert.rejects(resolveUser(r, 'app:nogroup'), /group "nogroup" does not exist/);
  });

  test('a FIFO, a huge file or a symlink out of the root counts as no file', { timeout: 60_000 }, async () => {
    files();
    mkfifo(join(r, 'etc', 'passwd'));
    assert.deepEqual(await ids('root'), [0, 0, '/', []]);
    await assert.rejects(resolveUser(r, 'app'), /because \/etc\/passwd in the sandbox is a FIFO, not a regular file/);
    files();
    writeFileSync(join(r, 'etc', 'passwd'), '');
    truncateSync(join(r, 'etc', 'passwd'), 200 * MiB);
    assert.deepEqual(await ids('root'), [0, 0, '/', []]);
    await assert.rejects(resolveUser(r, 'app'), /is larger than/);
    files();
    writeFileSync(join(outside, 'passwd'), 'app:x:777:777::/:/bin/sh\n');
    symlinkSync(join(outside, 'passwd'), join(r, 'etc', 'passwd'));
    await assert.rejects(resolveUser(r, 'app'), /the sandbox has no \/etc\/passwd/);
  });

  test('parsed files are reused only while unchanged: every edit, replacement or retarget is seen at once', async () => {
    // A file is held once its change time is a second old: wait that long before each lookup that
    // fills the cache, then change the file and look again.
    const settled = () => new Promise((res) => setTimeout(res, 1100));
    const passwd = (uid: string) => `root:x:0:0:root:/root:/bin/sh\napp:x:${uid}:${uid}:app:/home/app:/bin/sh\n`;
    files(passwd('1000'), 'root:x:0:\n');
    await settled();
    assert.deepEqual(await ids('app'), [1000, 1000, '/home/app', []]);
    // In place, same size and inode.
    writeFileSync(join(r, 'etc', 'passwd'), passwd('2000'));
    assert.deepEqual(await ids('app'), [2000, 2000, '/home/app', []]);
    await settled();
    assert.deepEqual(await ids('app'), [2000, 2000, '/home/app', []]);
    // Replaced by rename, as useradd does.
    writeFileSync(join(r, 'etc', 'passwd+'), passwd('3000'));
    renameSync(join(r, 'etc', 'passwd+'), join(r, 'etc', 'passwd'));
    assert.deepEqual(await ids('app'), [3000, 3000, '/home/app', []]);
    // A symlink inside the root retargeted to another file of the same size.
    writeFileSync(join(r, 'etc', 'p1'), passwd('6000'));
    writeFileSync(join(r, 'etc', 'p2'), passwd('7000'));
    rmSync(join(r, 'etc', 'passwd'));
    symlinkSync('p1', join(r, 'etc', 'passwd'));
    await settled();
    assert.deepEqual(await ids('app'), [6000, 6000, '/home/app', []]);
    rmSync(join(r, 'etc', 'passwd'));
    symlinkSync('p2', join(r, 'etc', 'passwd'));
    assert.deepEqual(await ids('app'), [7000, 7000, '/home/app', []]);
    // Gone, then back: no stale copy answers in between.
    rmSync(join(r, 'etc', 'passwd'));
    await assert.rejects(resolveUser(r, 'app'), /the sandbox has no \/etc\/passwd/);
    writeFileSync(join(r, 'etc', 'passwd'), passwd('8000'));
    assert.deepEqual(await ids('app'), [8000, 8000, '/home/app', []]);
    // A group added to /etc/group after the lookup was cached.
    writeFileSync(join(r, 'etc', 'group'), 'root:x:0:\ndocker:x:998:app\n');
    assert.deepEqual(await ids('app'), [8000, 8000, '/home/app', [998]]);
    rmSync(join(r, 'etc', 'p1'));
    rmSync(join(r, 'etc', 'p2'));
    // The whole /etc swapped: moved aside for a new one, then for a symlink to another directory.
    await settled();
    assert.deepEqual(await ids('app'), [8000, 8000, '/home/app', [998]]);
    renameSync(join(r, 'etc'), join(r, 'etc-old'));
    mkdirSync(join(r, 'etc'));
    writeFileSync(join(r, 'etc', 'passwd'), passwd('8001'));
    writeFileSync(join(r, 'etc', 'group'), 'root:x:0:\n');
    assert.deepEqual(await ids('app'), [8001, 8001, '/home/app', []]);
    await settled();
    assert.deepEqual(await ids('app'), [8001, 8001, '/home/app', []]);
    rmSync(join(r, 'etc'), { recursive: true });
    symlinkSync('etc-old', join(r, 'etc'));
    assert.deepEqual(await ids('app'), [8000, 8000, '/home/app', [998]]);
    rmSync(join(r, 'etc'));
    renameSync(join(r, 'etc-old'), join(r, 'etc'));
  });

  test('stampsInTopDir: the stamps statInRoot gives for plain files, and nothing for anything else', () => {
    const t = join(tmp, 'top');
    mkdirSync(join(t, 'etc'), { recursive: true });
    writeFileSync(join(t, 'etc', 'passwd'), 'root:x:0:0::/:/bin/sh\n');
    mkfifo(join(t, 'etc', 'group'));
    symlinkSync('passwd', join(t, 'etc', 'shadow'));
    const [passwd, group, shadow, missing] = stampsInTopDir(t, 'etc', ['passwd', 'group', 'shadow', 'missing']);
    assert.equal(passwd?.key, statInRoot(t, '/etc/passwd', MiB).key);
    assert.deepEqual([group, shadow, missing], [undefined, undefined, undefined], 'a FIFO, a symlink and a missing name get nothing');
    // A top directory that is a symlink (here to the host's /etc) is not followed: nothing for any name.
    const u = join(tmp, 'top-link');
    mkdirSync(u);
    symlinkSync('/etc', join(u, 'etc'));
    assert.deepEqual(stampsInTopDir(u, 'etc', ['passwd', 'group']), [undefined, undefined]);
    assert.deepEqual(stampsInTopDir(join(tmp, 'no-such-root'), 'etc', ['passwd']), [undefined]);
    assert.throws(() => stampsInTopDir(t, '../etc', ['passwd']), /not one path component/);
    assert.throws(() => stampsInTopDir(t, '..', ['passwd']), /not one path component/);
    assert.throws(() => stampsInTopDir(t, 'etc', ['ssl/x']), /not one path component/);
  });

  test('statInRoot: a stamp that changes with the content and refuses what readFileInRoot refuses', async () => {
    const a = statInRoot(root, '/etc/passwd', MiB);
    assert.equal(a.key, statInRoot(root, 'etc/../etc/passwd', MiB).key);
    assert.equal(a.key, (await readFileInRoot(root, '/etc/passwd', MiB)).stamp.key);
    writeFileSync(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    assert.notEqual(statInRoot(root, '/etc/passwd', MiB).key, a.key, 'rewritten with the same bytes: a new change time');
    for (const [p, want] of [['/etc/host-abs', 'missing'], ['/etc/fifo', 'not-regular'], ['/huge', 'too-large'], ['/loop-a', 'too-many-links']] as const) {
      assert.equal(await problem(Promise.resolve().then(() => statInRoot(root, p, MiB))), want, p);
    }
  });
});
