// File operations through the SDK on every runtime, a streamed 1 GiB round trip with the daemon's
// memory watched, and path-escape attempts that must never reach a host file.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { rejectsWith } from './helpers/assert.js';

let d: TestDaemon;
const markerName = `cordon-marker-${process.pid}-${randomBytes(4).toString('hex')}`;
const markerPath = `/tmp/${markerName}`;
const secret = `host-secret-${randomBytes(8).toString('hex')}`;

before(async () => {
  writeFileSync(markerPath, secret, { mode: 0o644 });
  d = await startDaemon('files');
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d.cleanup();
  rmSync(markerPath, { force: true });
});

const hostMarkerIntact = () => assert.equal(readFileSync(markerPath, 'utf8'), secret, 'the host marker file is unchanged');

for (const runtime of RUNTIMES) {
  describe(`files on ${runtime}`, () => {
    let s: Sandbox;
    before(async () => {
      s = await d.client.create({ runtime, labels: { suite: 'files' } });
    });
    after(async () => {
      await s?.remove().catch(() => {});
    });

    test('write with mode and parents, append, read, stat', async () => {
      const w = await s.files.write('/root/deep/er/note.txt', 'hello', { mode: 0o640 });
      assert.equal(w.type, 'file');
      assert.equal(w.size, 5);
      assert.equal(w.mode, 0o640);
      assert.equal(w.permissions, '-rw-r-----');
      await s.files.append('/root/deep/er/note.txt', ' world');
      assert.equal(await s.files.readText('/root/deep/er/note.txt'), 'hello world');
      const st = await s.files.stat('/root/deep/er');
      assert.equal(st.type, 'dir');
      assert.equal(st.name, 'er');
      await rejectsWith(s.files.write('/root/nope/x.txt', 'x', { parents: false }), 'not_found');
      const bin = randomBytes(4096);
      await s.files.write('/root/bin.dat', bin);
      assert.deepEqual(await s.files.read('/root/bin.dat'), bin, 'binary content survives');
      const asUser = await s.files.write('/home/user/mine.txt', 'u', { user: 'user' });
      assert.equal(asUser.owner, 'user');
      await rejectsWith(s.files.write('/root/x.txt', 'x', { user: 'user' }), 'permission_denied');
      await rejectsWith(s.files.read('/root/missing.txt'), 'not_found');
      await rejectsWith(s.files.read('/root/deep'), 'invalid_argument', /directory/);
    });

    test('list with depth, mkdir -p, move, remove', async () => {
      const m = await s.files.mkdir('/srv/a/b/c');
      assert.equal(m.type, 'dir');
      await s.files.write('/srv/a/top.txt', '1');
      await s.files.write('/srv/a/b/mid.txt', '22');
      await s.files.write('/srv/a/b/c/low.txt', '333');
      const one = await s.files.list('/srv/a');
      assert.deepEqual(one.map((e) => e.path).sort(), ['/srv/a/b', '/srv/a/top.txt']);
      const three = await s.files.list('/srv/a', { depth: 3 });
      assert.deepEqual(three.map((e) => e.path).sort(), ['/srv/a/b', '/srv/a/b/c', '/srv/a/b/c/low.txt', '/srv/a/b/mid.txt', '/srv/a/top.txt']);
      assert.equal(three.find((e) => e.path === '/srv/a/b/c/low.txt')?.size, 3);
      await s.files.mkdir('/srv/a/b/c'); // mkdir -p on an existing directory is fine

      const mv = await s.files.move('/srv/a/top.txt', '/srv/moved.txt');
      assert.equal(mv.path, '/srv/moved.txt');
      assert.equal(await s.files.exists('/srv/a/top.txt'), false);
      assert.equal(await s.files.readText('/srv/moved.txt'), '1');
      await rejectsWith(s.files.move('/srv/none', '/srv/x'), 'not_found');

      await s.files.remove('/srv/moved.txt');
      assert.equal(await s.files.exists('/srv/moved.txt'), false);
      await s.files.remove('/srv/a', { recursive: true });
      assert.equal(await s.files.exists('/srv/a'), false);
      await rejectsWith(s.files.remove('/srv/a'), 'not_found');
    });

    test('path escape: .., absolute and relative symlinks never reach the host marker', async () => {
      // Symlinks made inside the sandbox that point at the host-only marker path.
      const mk = await s.exec(['sh', '-c', `ln -s ${markerPath} /root/abs-link; ln -s ../../../../../..${markerPath} /root/rel-link; ln -s /tmp /root/tmp-dir-link; ln -s / /root/root-link`]);
      assert.equal(mk.exit_code, 0, mk.stderr);
      const reads = [`/root/abs-link`, `/root/rel-link`, `/root/tmp-dir-link/${markerName}`, `/root/root-link/tmp/${markerName}`, `/root/../../..${markerPath}`, `../../../..${markerPath}`, `/root/%2e%2e/%2e%2e${markerPath}`];
      for (const p of reads) {
        const got = await s.files.read(p).then((b) => b.toString(), (e: Error & { code: string }) => `error:${e.code}`);
        assert.ok(!got.includes(secret), `${p} must not return the host file`);
        assert.equal(got, 'error:not_found', `${p} resolves inside the sandbox, where no such file exists`);
      }
      const st = await s.files.stat('/root/abs-link');
      assert.equal(st.type, 'symlink');
      assert.equal(st.symlink_target, markerPath);

      // Writes through the same paths land inside the sandbox (or fail), never on the host.
      for (const p of ['/root/abs-link', '/root/rel-link', `/root/tmp-dir-link/${markerName}`, `/../../..${markerPath}`]) {
        await s.files.write(p, 'pwned').catch(() => {});
        hostMarkerIntact();
      }
      await s.files.append('/root/abs-link', 'more').catch(() => {});
      await s.files.move('/root/abs-link', '/root/moved-link').catch(() => {});
      await s.files.remove('/root/rel-link').catch(() => {});
      await s.files.mkdir(`/root/root-link/tmp/${markerName}-dir`).catch(() => {});
      hostMarkerIntact();
      assert.equal((await s.exec(['cat', markerPath])).stdout, 'pwnedmore', "the writes went to the sandbox's own /tmp");
      const inside = await s.exec(['sh', '-c', `grep -rl --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev ${secret} / 2>/dev/null | head -1`]);
      assert.equal(inside.stdout, '', 'the host secret is nowhere in the sandbox');
    });

    test('NUL bytes in paths are refused with 400', async () => {
      await rejectsWith(s.files.read('/root/a\0b'), 'invalid_argument', /NUL/);
      await rejectsWith(s.files.write('/root/a\0b', 'x'), 'invalid_argument', /NUL/);
      await rejectsWith(s.files.stat('/root/\0'), 'invalid_argument', /NUL/);
      await rejectsWith(s.files.mkdir('/root/x\0y'), 'invalid_argument', /NUL/);
      await rejectsWith(s.files.move('/root/bin.dat', '/root/\0'), 'invalid_argument', /NUL/);
      await rejectsWith(s.files.remove('/root/\0'), 'invalid_argument', /NUL/);
      await rejectsWith(s.files.list('/root\0'), 'invalid_argument', /NUL/);
      assert.equal(await s.files.exists('/root/a'), false);
    });
  });
}

describe('streamed 1 GiB upload and download', () => {
  const runtime = RUNTIMES.includes('crun') ? 'crun' : RUNTIMES[0];
  const SIZE = 1024 ** 3;
  const CHUNK = 1024 * 1024;

  /** Deterministic 1 GiB: each MiB is a shared random block xor'ed with its index, hashed as generated. */
  function source(hash: ReturnType<typeof createHash>): Readable {
    const block = randomBytes(CHUNK);
    let i = 0;
    return new Readable({
      read() {
        if (i * CHUNK >= SIZE) return void this.push(null);
        const c = Buffer.from(block);
        c.writeUInt32LE(i++, 0);
        hash.update(c);
        this.push(c);
      },
    });
  }

  function watchRss(pid: number) {
    let max = 0;
    const read = () => {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) max = Math.max(max, Number(m[1]) * 1024);
    };
    read();
    const t = setInterval(read, 100);
    return { stop: () => (clearInterval(t), read(), max) };
  }

  test(`on ${runtime}: sha256 matches both ways and the daemon's RSS stays far below 1 GiB`, async () => {
    const s = await d.client.create({ runtime, labels: { suite: 'files-big' } });
    try {
      const rss = watchRss(d.proc.pid!);
      const up = createHash('sha256');
      const info = await s.files.write('/root/big.bin', source(up));
      const upHex = up.digest('hex');
      assert.equal(info.size, SIZE);
      const inside = await s.exec(['sh', '-c', 'sha256sum /root/big.bin | cut -d" " -f1']);
      assert.equal(inside.stdout.trim(), upHex, 'the sandbox holds exactly the bytes sent');

      const down = createHash('sha256');
      let got = 0;
      for await (const c of await s.files.readStream('/root/big.bin')) {
        down.update(c as Buffer);
        got += (c as Buffer).length;
      }
      assert.equal(got, SIZE);
      assert.equal(down.digest('hex'), upHex, 'the download is byte-identical');
      const max = rss.stop();
      assert.ok(max < 400 * 1024 * 1024, `daemon RSS peaked at ${Math.round(max / 1024 / 1024)} MiB`);
    } finally {
      await s.remove().catch(() => {});
    }
  });
});
