import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { parseChallenge } from '../src/image/oci/auth.js';
import { AutoDecompress } from '../src/image/oci/decompress.js';
import { formatReference, parseReference } from '../src/image/oci/reference.js';
import { unpackLayer } from '../src/image/oci/unpack.js';
import { appEntries, baseEntries, compress, layerTar, type Entry } from './helpers/oci-image.js';

const tmp = mkdtempSync('/var/lib/cordon-test/unpack-');
after(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;

async function unpack(entries: Entry[], how: 'gzip' | 'zstd' | 'none' = 'none'): Promise<string> {
  const dir = join(tmp, `l${n++}`);
  spawnSync('mkdir', ['-p', dir]);
  await unpackLayer(Readable.from([compress(await layerTar(entries), how)]).pipe(new AutoDecompress()), dir);
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
