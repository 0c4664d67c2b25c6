import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createReadStream, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { CordonError } from '../src/errors/registry.js';
import { parseChallenge } from '../src/image/oci/auth.js';
import { decompressed } from '../src/image/oci/decompress.js';
import { LayerStore } from '../src/image/oci/layer-store.js';
import { formatReference, parseReference } from '../src/image/oci/reference.js';
import { unpackLayer } from '../src/image/oci/unpack.js';
import { appEntries, baseEntries, compress, layerTar, type Entry } from './helpers/oci-image.js';

const tmp = mkdtempSync('/var/lib/cordon-test/unpack-');
after(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;

async function unpack(entries: Entry[], how: 'gzip' | 'zstd' | 'none' = 'none'): Promise<string> {
  const dir = join(tmp, `l${n++}`);
  spawnSync('mkdir', ['-p', dir]);
  await unpackLayer(decompressed(Readable.from([compress(await layerTar(entries), how)])), dir);
  return dir;
}

const xattr = (p: string, name: string) => spawnSync('getfattr', ['--only-values', '-h', '-n', name, p], { encoding: 'utf8' }).stdout;

describe('image references', () => {
  it('normalises like Docker', () => {
    assert.equal(formatReference(parseReference('busybox')), 'docker.io/library/busybox:latest');
    assert.equal(formatReference(parseReference('ghcr.io/o/n:1.2')), 'ghcr.io/o/n:1.2');
    assert.equal(formatReference(parseReference('localhost:5000/app')), 'localhost:5000/app:latest');
    assert.equal(parseReference('127.0.0.1:5000/a/b@sha256:' + 'a'.repeat(64)).tag, undefined);
    assert.throws(() => parseReference('UPPER/case'), /not valid/);
    assert.throws(() => parseReference('a@sha256:xyz'), /digest/);
  });
  it('parses Bearer challenges', () => {
    const c = parseChallenge('Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull"');
    assert.equal(c?.scheme, 'bearer');
    assert.equal(c?.params.realm, 'https://auth.example/token');
    assert.equal(c?.params.scope, 'repository:a/b:pull');
  });
});

describe('layer unpacking', () => {
  for (const how of ['gzip', 'zstd', 'none'] as const) {
    it(`unpacks a ${how} layer with whiteouts, opaque dirs, hard links, devices, xattrs and setuid`, async () => {
      const d = await unpack([...baseEntries().filter((e) => !e.name.startsWith('bin/')), ...appEntries()], how);
      const wh = lstatSync(join(d, 'etc/old.txt'));
      assert.ok(wh.isCharacterDevice() && wh.rdev === 0, 'whiteout is a 0/0 char device');
      assert.equal(xattr(join(d, 'data'), 'trusted.overlay.opaque'), 'y');
      assert.equal(statSync(join(d, 'app/hello.txt')).ino, statSync(join(d, 'app/hello-link.txt')).ino);
      assert.equal(xattr(join(d, 'app/hello.txt'), 'user.origin'), 'cordon-test');
      assert.equal(statSync(join(d, 'app/suid')).mode & 0o7777, 0o4755);
      assert.ok(lstatSync(join(d, 'app/null')).isCharacterDevice());
      assert.equal(statSync(join(d, 'home/app')).uid, 1000);
      assert.equal(statSync(join(d, 'tmp')).mode & 0o7777, 0o1777);
    });
  }

  it('refuses entries with ..', async () => {
    await assert.rejects(unpack([{ name: '../escape.txt', content: 'x' }]), /\.\./);
    await assert.rejects(unpack([{ name: 'a/../../escape.txt', content: 'x' }]), /\.\./);
    assert.ok(!existsSync(join(tmp, 'escape.txt')));
  });

  it('resolves symlinked parents inside the layer, never outside it', async () => {
    const d = await unpack([
      { name: 'abs', type: 'symlink', linkname: '/' },
      { name: 'abs/etc/pwned', content: 'x' },
      { name: 'up', type: 'symlink', linkname: '../../../../..' },
      { name: 'up/tmp/pwned', content: 'y' },
      { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
      { name: 'lib/x.so', content: 'z' },
    ]);
    assert.equal(readFileSync(join(d, 'etc/pwned'), 'utf8'), 'x');
    assert.equal(readFileSync(join(d, 'tmp/pwned'), 'utf8'), 'y');
    assert.equal(readFileSync(join(d, 'usr/lib/x.so'), 'utf8'), 'z');
    assert.equal(readlinkSync(join(d, 'abs')), '/');
    assert.ok(!existsSync('/etc/pwned') && !existsSync('/tmp/pwned'));
  });

  it('refuses hard links to files outside the layer', async () => {
    await assert.rejects(unpack([{ name: 'shadow', type: 'link', linkname: '../../../etc/shadow' }]), /\.\./);
    await assert.rejects(unpack([{ name: 'p', type: 'symlink', linkname: '/' }, { name: 'x', type: 'link', linkname: 'p/etc/passwd' }]), /not a file in this layer/);
  });

  it('replaces a symlink with a file instead of writing through it', async () => {
    const d = await unpack([
      { name: 'target.txt', content: 'keep' },
      { name: 'f', type: 'symlink', linkname: 'target.txt' },
      { name: 'f', content: 'new' },
    ]);
    assert.equal(readFileSync(join(d, 'target.txt'), 'utf8'), 'keep');
    assert.ok(lstatSync(join(d, 'f')).isFile());
  });
});

/** A layer dir with a canary file next to it, to see that nothing outside the layer is touched. */
function caged(): { parent: string; dir: string; canary: string } {
  const parent = join(tmp, `cage${n++}`);
  mkdirSync(join(parent, 'layer'), { recursive: true });
  writeFileSync(join(parent, 'canary'), 'alive');
  return { parent, dir: join(parent, 'layer'), canary: join(parent, 'canary') };
}

async function unpackCaged(entries: Entry[]): Promise<{ parent: string; dir: string; canary: string }> {
  const c = caged();
  await unpackLayer(Readable.from([await layerTar(entries)]), c.dir);
  return c;
}

function assertCageIntact(c: { parent: string; dir: string; canary: string }): void {
  assert.ok(lstatSync(c.parent).isDirectory(), 'the parent of the layer dir survives');
  assert.ok(lstatSync(c.dir).isDirectory(), 'the layer dir itself stays a directory');
  assert.equal(readFileSync(c.canary, 'utf8'), 'alive', 'the file next to the layer dir survives');
}

describe('hostile layer entries', () => {
  for (const prefix of ['', 'sub/']) {
    for (const wh of ['.wh.', '.wh..', '.wh...']) {
      it(`refuses the whiteout "${prefix}${wh}" and touches nothing outside the layer`, async () => {
        const c = caged();
        const entries: Entry[] = [{ name: 'sub', type: 'directory' }, { name: 'sub/keep', content: 'k' }, { name: `${prefix}${wh}` }];
        await assert.rejects(unpackLayer(Readable.from([await layerTar(entries)]), c.dir), /whiteout/);
        assertCageIntact(c);
      });
    }
  }

  it('refuses empty and "." path components but accepts a leading "./" and a trailing "/"', async () => {
    for (const name of ['a//b', 'a/./b', 'a/.', '/etc/passwd', './/a', '././a']) {
      const c = caged();
      await assert.rejects(unpackLayer(Readable.from([await layerTar([{ name, content: 'x' }])]), c.dir), /empty|"\."|absolute/, name);
      assertCageIntact(c);
    }
    const c = await unpackCaged([
      { name: './', type: 'directory', mode: 0o755 },
      { name: './etc/', type: 'directory', mode: 0o750 },
      { name: './etc/hosts', content: 'h' },
      { name: 'usr/', type: 'directory' },
      { name: 'usr/bin/', type: 'directory' },
      { name: './usr/bin/tool', content: 't' },
    ]);
    assert.equal(readFileSync(join(c.dir, 'etc/hosts'), 'utf8'), 'h');
    assert.equal(statSync(join(c.dir, 'etc')).mode & 0o777, 0o750);
    assert.equal(readFileSync(join(c.dir, 'usr/bin/tool'), 'utf8'), 't');
  });

  it('keeps a whiteout under a symlinked parent inside the layer', async () => {
    const c = caged();
    await unpackLayer(
      Readable.from([
        await layerTar([
          { name: 'abs', type: 'symlink', linkname: c.parent },
          { name: 'abs/.wh.canary' },
          { name: 'up', type: 'symlink', linkname: '../../..' },
          { name: 'up/.wh.canary' },
        ]),
      ]),
      c.dir,
    );
    assertCageIntact(c);
    const inside = lstatSync(join(c.dir, c.parent, 'canary'));
    assert.ok(inside.isCharacterDevice() && inside.rdev === 0, 'the absolute symlink was followed inside the layer');
    assert.ok(lstatSync(join(c.dir, 'canary')).isCharacterDevice(), 'the relative symlink stopped at the layer root');
  });

  it('refuses a hard link to a whiteout or to a whiteout name', async () => {
    const base: Entry[] = [{ name: 'etc', type: 'directory' }, { name: 'etc/passwd', content: 'root' }, { name: 'etc/.wh.passwd' }];
    await assert.rejects(unpackCaged([...base, { name: 'x', type: 'link', linkname: 'etc/passwd' }]), /whiteout/);
    await assert.rejects(unpackCaged([...base, { name: 'x', type: 'link', linkname: 'etc/.wh.passwd' }]), /not a file in this layer/);
  });

  it('refuses a bad name on a large file without crashing on its unread body', async () => {
    // Small chunks, as from the network: the refused entry's body is still arriving when the tar is given up.
    const chunked = (b: Buffer) => Readable.from(Array.from({ length: Math.ceil(b.length / 16384) }, (_, i) => b.subarray(i * 16384, (i + 1) * 16384)));
    const big = Buffer.alloc(4 * 1024 * 1024);
    await assert.rejects(unpackLayer(chunked(await layerTar([{ name: 'a//big', content: big }])), caged().dir), /empty/);
    await assert.rejects(unpackLayer(chunked(await layerTar([{ name: 'a', content: 'x' }, { name: 'b', content: big }])), caged().dir, { maxEntries: 1 }), /more than 1 entries/);
  });

  it('refuses .. inside a longer path without touching the parent', async () => {
    const c = caged();
    await assert.rejects(unpackLayer(Readable.from([await layerTar([{ name: 'a/../..', type: 'directory' }, { name: 'a/../../canary', content: 'dead' }])]), c.dir), /\.\./);
    assertCageIntact(c);
  });
});

describe('tar headers', () => {
  const hexXattr = (p: string, name: string) => /=0x([0-9a-f]*)/.exec(spawnSync('getfattr', ['-h', '-e', 'hex', '-n', name, p], { encoding: 'utf8' }).stdout)?.[1];

  it('keeps binary xattr values (security.capability) byte for byte from a GNU tar layer', async () => {
    const src = join(tmp, `gnu${n++}`);
    mkdirSync(src);
    writeFileSync(join(src, 'ping'), 'ping');
    assert.equal(spawnSync('setcap', ['cap_setuid,cap_net_raw+ep', join(src, 'ping')]).status, 0);
    assert.equal(spawnSync('setfattr', ['-n', 'user.bin', '-v', '0x00ff80c30a', join(src, 'ping')]).status, 0);
    const want = hexXattr(join(src, 'ping'), 'security.capability');
    assert.match(want ?? '', /80/, 'the capability value has a byte that is not UTF-8 on its own');
    const file = `${src}.tar`;
    const r = spawnSync('tar', ['--xattrs', '--xattrs-include=*', '--format=posix', '-C', src, '-cf', file, 'ping'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const c = caged();
    await unpackLayer(createReadStream(file), c.dir);
    assert.equal(hexXattr(join(c.dir, 'ping'), 'security.capability'), want);
    assert.equal(hexXattr(join(c.dir, 'ping'), 'user.bin'), '00ff80c30a');
  });

  it('refuses a pax header larger than 1 MiB before buffering it', async () => {
    await assert.rejects(unpackCaged([{ name: 'f', content: 'x', pax: { 'SCHILY.xattr.user.big': 'x'.repeat(2 * 1024 * 1024) } }]), /pax-header of \d+ bytes/);
  });

  it('never sets a directory time through a symlink that replaced the directory', async () => {
    const c = caged();
    const before = lstatSync(c.parent).mtimeMs;
    await unpackLayer(Readable.from([await layerTar([{ name: 'd', type: 'directory' }, { name: 'd', type: 'symlink', linkname: c.parent }])]), c.dir);
    assert.ok(lstatSync(join(c.dir, 'd')).isSymbolicLink());
    assert.equal(lstatSync(c.parent).mtimeMs, before, 'the directory outside the layer keeps its mtime');
  });

  it('ignores overlayfs xattrs a layer carries', async () => {
    const c = await unpackCaged([{ name: 'd', type: 'directory', pax: { 'SCHILY.xattr.trusted.overlay.redirect': '/etc', 'SCHILY.xattr.user.ok': 'y' } }]);
    assert.equal(xattr(join(c.dir, 'd'), 'trusted.overlay.redirect'), '');
    assert.equal(xattr(join(c.dir, 'd'), 'user.ok'), 'y');
  });

  it('stops at the entry limit', async () => {
    const many = Array.from({ length: 20 }, (_, i) => ({ name: `f${i}`, content: 'x' }));
    await assert.rejects(unpackLayer(Readable.from([await layerTar(many)]), caged().dir, { maxEntries: 10 }), /more than 10 entries/);
  });
});

const MiB = 1024 * 1024;
/** One file of zeros: 64 MiB of tar that compresses to a few KiB. */
const zeroTar = async () => layerTar([{ name: 'zeros', content: Buffer.alloc(64 * MiB) }]);
const drainAll = async (r: Readable) => {
  const out: Buffer[] = [];
  for await (const c of r) out.push(c as Buffer);
  return Buffer.concat(out);
};

describe('decompression', () => {
  for (const how of ['gzip', 'zstd'] as const) {
    it(`decompresses a ${how} bomb only as fast as it is read`, async () => {
      const bomb = compress(await zeroTar(), how);
      const out = decompressed(Readable.from([bomb]));
      await new Promise((r) => out.once('readable', r));
      // Nobody reads any more: wait until the buffered amount stops growing, then check it stayed small.
      let last = -1;
      for (let same = 0; same < 5; ) {
        await new Promise((r) => setTimeout(r, 20));
        same = out.readableLength === last ? same + 1 : 0;
        last = out.readableLength;
      }
      assert.ok(out.readableLength < 4 * MiB, `${out.readableLength} bytes were decompressed ahead of the reader`);
      out.destroy();
    });
  }

  it('reads concatenated and skippable zstd frames', async () => {
    const skippable = Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0]), Buffer.from('abc')]);
    const data = Buffer.concat([compress(Buffer.from('hello '), 'zstd'), skippable, compress(Buffer.from('world'), 'zstd')]);
    // One byte per chunk, so every header and block boundary falls between chunks.
    const bytes = [...data].map((b) => Buffer.from([b]));
    assert.equal((await drainAll(decompressed(Readable.from(bytes)))).toString(), 'hello world');
    await assert.rejects(drainAll(decompressed(Readable.from([data.subarray(0, data.length - 3)]))), /does not decompress/);
  });

  it('refuses a zstd frame that asks for a 1 GiB window', async () => {
    // magic, descriptor (no content size, not single-segment), window 2^30, one raw last block of 1 byte
    const frame = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, (30 - 10) << 3, 0x09, 0x00, 0x00, 0x78]);
    await assert.rejects(drainAll(decompressed(Readable.from([frame]))), /does not decompress.*(window|memory)/i);
  });
});

describe('layer store limits', () => {
  const store = new LayerStore(join(tmp, 'store'), { maxBytes: MiB, maxEntries: 100 });
  before(() => store.init());
  const nothingKept = () => {
    assert.deepEqual(readdirSync(store.tmpDir), [], 'nothing left in tmp/');
    assert.deepEqual(readdirSync(store.layersDir), [], 'nothing in layers/');
    assert.deepEqual(readdirSync(store.shortDir), [], 'nothing in l/');
  };
  const tooLarge = (flag: string) => (e: unknown) => e instanceof CordonError && e.code === 'payload_too_large' && e.message.includes(flag);
  const fake = 'sha256:' + 'a'.repeat(64);

  for (const how of ['gzip', 'zstd'] as const) {
    it(`stops a ${how} bomb at the size limit, keeping nothing`, async () => {
      const bomb = compress(await zeroTar(), how);
      assert.ok(bomb.length < MiB / 4, 'the bomb itself is small');
      await assert.rejects(store.ensure(fake, { open: async () => ({ stream: Readable.from([bomb]) }) }), tooLarge('--max-layer-size'));
      nothingKept();
    });
  }

  it('stops a layer past the entry limit, keeping nothing', async () => {
    const many = Array.from({ length: 150 }, (_, i) => ({ name: `f${i}` }));
    await assert.rejects(store.ensure(fake, { open: async () => ({ stream: Readable.from([compress(await layerTar(many), 'gzip')]) }) }), tooLarge('--max-layer-entries'));
    nothingKept();
  });

  it('refuses an unsafe whiteout with a 400 that says so, keeping nothing', async () => {
    const tarball = await layerTar([{ name: 'etc', type: 'directory' }, { name: 'etc/.wh...' }]);
    await assert.rejects(store.ensure(fake, { open: async () => ({ stream: Readable.from([tarball]) }) }), (e: unknown) => e instanceof CordonError && e.code === 'invalid_argument' && /unsafe.*whiteout/.test(e.message));
    nothingKept();
  });
});
