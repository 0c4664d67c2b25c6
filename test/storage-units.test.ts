// Units of the storage capability without a daemon: the CLI's -v and --mount parsers, mount target
// checks, and host-side file access to a hostile tree (FilesInRoot) on a scratch directory.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { parseMountFlag, parseVolumeFlag } from '../src/cli/commands/volume.js';
import { checkTarget } from '../src/engine/sandbox-storage.js';
import { components, FilesInRoot } from '../src/volume/files-in-root.js';

const scratch = mkdtempSync(join(tmpdir(), 'cordon-storage-units-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const codeOf = async (p: Promise<unknown>) => p.then(() => 'ok', (e: { code?: string }) => e.code);

describe('flag parsers', () => {
  test('-v NAME:/path[:ro|rw]', () => {
    assert.deepEqual(parseVolumeFlag('data:/data'), { name: 'data', path: '/data' });
    assert.deepEqual(parseVolumeFlag('data:/data:ro'), { name: 'data', path: '/data', read_only: true });
    assert.deepEqual(parseVolumeFlag('data:/data:rw'), { name: 'data', path: '/data' });
    for (const bad of ['data', 'data:rel', 'data:/x:rx', ':/x', 'a:/b:ro:x']) assert.throws(() => parseVolumeFlag(bad), /-v/);
  });

  test("--mount in Docker's syntax", () => {
    assert.deepEqual(parseMountFlag('type=bind,source=/h,target=/c'), { type: 'bind', source: '/h', target: '/c' });
    assert.deepEqual(parseMountFlag('type=bind,src=/h,dst=/c,readonly'), { type: 'bind', source: '/h', target: '/c', read_only: true });
    assert.deepEqual(parseMountFlag('type=overlay,src=/h,destination=/c,ro=false'), { type: 'overlay', source: '/h', target: '/c', read_only: false });
    assert.deepEqual(parseMountFlag('type=tmpfs,dst=/t,tmpfs-size=8m'), { type: 'tmpfs', target: '/t', tmpfs_size: '8m' });
    assert.deepEqual(parseMountFlag('src=/h,dst=/c'), { type: 'bind', source: '/h', target: '/c' }, 'bind is the default type');
    for (const bad of ['type=nfs,src=/a,dst=/b', 'type=bind,dst=/b', 'type=bind,src=/a', 'type=tmpfs,src=/a,dst=/b', 'type=bind,src=/a,dst=/b,tmpfs-size=1m', 'type=bind,src=/a,dst=/b,ro=maybe', 'type=bind,src=/a,dst=/b,colour=red']) {
      assert.throws(() => parseMountFlag(bad), /--mount/, bad);
    }
  });

  test('mount targets', () => {
    assert.equal(checkTarget('/data/', 'volumes'), '/data');
    for (const bad of ['/', 'rel', '/a/../b', '/proc', '/proc/x', '/sys/fs', '/dev/shm', '/.cordon/agent', '/etc/hosts', 'a\0b']) assert.throws(() => checkTarget(bad, 'volumes'), /volumes/, bad);
  });

  test('paths inside a volume', () => {
    assert.deepEqual(components('/a//b/./c/'), ['a', 'b', 'c']);
    assert.deepEqual(components('/'), []);
    for (const bad of ['/a/../b', '..', 'a\0b', '', `/${'x'.repeat(256)}`]) assert.throws(() => components(bad), bad);
  });
});

describe('FilesInRoot on a hostile tree', () => {
  const root = join(scratch, 'vol');
  const outside = join(scratch, 'outside');
  mkdirSync(join(root, 'dir'), { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(outside, 'secret'), 'host secret');
  writeFileSync(join(root, 'dir', 'ok.txt'), 'fine');
  symlinkSync(outside, join(root, 'out'));
  symlinkSync(join(outside, 'secret'), join(root, 'secret'));
  symlinkSync('dir', join(root, 'rel'));
  execFileSync('mkfifo', [join(root, 'fifo')]);
  const f = new FilesInRoot(root);
  const read = async (p: string) => {
    const { stream } = await f.read(p, 1 << 20);
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString();
  };

  test('reads only regular files, through no link', async () => {
    assert.equal(await read('/dir/ok.txt'), 'fine');
    for (const p of ['/secret', '/out/secret', '/rel/ok.txt', '/fifo', '/dir']) assert.equal(await codeOf(read(p)), 'invalid_argument', p);
    assert.equal(await codeOf(read('/missing')), 'not_found');
    assert.equal(await codeOf(f.read('/dir/ok.txt', 2)), 'payload_too_large');
    writeFileSync(join(root, 'empty'), '');
    assert.equal(await read('/empty'), '', 'an empty file reads as nothing');
  });

  test('writes replace links and FIFOs, never write through them; bounded', async () => {
    await f.write('/secret', [Buffer.from('mine')], { maxBytes: 100 });
    assert.equal(readFileSync(join(outside, 'secret'), 'utf8'), 'host secret');
    assert.equal(await read('/secret'), 'mine');
    await f.write('/fifo', [Buffer.from('no fifo')], { maxBytes: 100 });
    assert.equal(await read('/fifo'), 'no fifo');
    assert.equal(await codeOf(f.write('/out/new', [Buffer.from('x')], { maxBytes: 100 })), 'invalid_argument');
    assert.equal(await codeOf(f.write('/dir/big', [Buffer.alloc(200)], { maxBytes: 100 })), 'payload_too_large');
    assert.equal(await codeOf(f.stat('/dir/big')), 'not_found', 'a refused upload leaves nothing');
    const stalled = new Readable({ read() {} });
    assert.equal(await codeOf(f.write('/dir/slow', stalled, { maxBytes: 100, idleMs: 200 })), 'deadline_exceeded');
    assert.equal(await codeOf(f.stat('/dir/slow')), 'not_found');
  });

  test('stat, list, mkdir, metadata, remove', async () => {
    assert.equal((await f.stat('/out')).type, 'symlink');
    assert.equal((await f.stat('/out')).target, outside);
    assert.equal((await f.stat('/')).type, 'dir');
    const all = await f.list('/', 3);
    assert.ok(all.some((e) => e.path === '/dir/ok.txt'));
    assert.ok(!all.some((e) => e.path.startsWith('/out/')), 'a linked directory is not entered');
    assert.equal(await codeOf(f.list('/', 3, 2)), 'payload_too_large');
    assert.equal((await f.mkdir('/a/b', { parents: true, mode: 0o700 })).type, 'dir');
    assert.equal(await codeOf(f.mkdir('/x/y')), 'not_found');
    assert.equal(await codeOf(f.mkdir('/out/y', { parents: true })), 'invalid_argument');
    assert.equal(await codeOf(f.setMetadata('/out', { mode: 0o777 })), 'invalid_argument');
    assert.equal((await f.setMetadata('/dir/ok.txt', { mode: 0o600 })).mode, 0o600);
    await f.remove('/out');
    assert.equal(readFileSync(join(outside, 'secret'), 'utf8'), 'host secret', 'removing a link leaves its target');
    await f.remove('/a');
    assert.equal(await codeOf(f.stat('/a')), 'not_found');
    assert.equal(await codeOf(f.remove('/')), 'invalid_argument');
  });
});
