import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import tar from 'tar-stream';
import { after, before, describe, it } from 'node:test';
import { CLI, cli, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { dockerArchive, layerTar, push, writeLayout } from './helpers/oci-image.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';

// A daemon started with `--max-layer-size 1m` refuses, with a 413 that names the flag, to pull or
// import an image whose layer decompresses past 1 MiB (a gzip bomb of zeros), and keeps nothing of it.

const MiB = 1024 * 1024;
let reg: TestRegistry;
let d: TestDaemon;
let work: string;

const imagesDir = () => join(d.dataDir, 'images');
const nothingKept = () => {
  assert.deepEqual(readdirSync(join(imagesDir(), 'tmp')), [], 'nothing left in tmp/');
  assert.deepEqual(readdirSync(join(imagesDir(), 'layers')), [], 'no layer kept');
};

before(async () => {
  work = mkdtempSync('/var/lib/cordon-test/imglimits-');
  reg = await startRegistry('limits');
  d = await startDaemon('images-limits', { args: ['--max-layer-size', '1m'] });
  writeLayout(join(work, 'bomb'), { layers: [{ tar: await layerTar([{ name: 'zeros', content: Buffer.alloc(8 * MiB) }]), compression: 'gzip' }], config: {} });
  push(join(work, 'bomb'), `${reg.host}/test/bomb:1`);
  writeLayout(join(work, 'small'), { layers: [{ tar: await layerTar([{ name: 'small.txt', content: 'small' }]), compression: 'gzip' }], config: {} });
  push(join(work, 'small'), `${reg.host}/test/small:1`);
});

after(async () => {
  await d?.cleanup();
  await reg?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

describe('a daemon with --max-layer-size 1m', () => {
  it('refuses to pull an image with a layer past the limit, naming the flag', async () => {
    const r = await cli(d, ['image', 'pull', `${reg.host}/test/bomb:1`]);
    assert.equal(r.code, 65, r.stderr);
    assert.match(r.stderr, /more than 1\.0MiB once decompressed.*--max-layer-size/);
    nothingKept();
    const ls = JSON.parse((await cli(d, ['image', 'ls', '--json'])).stdout) as { name: string }[];
    assert.ok(!ls.some((i) => i.name.includes('bomb')));
  });

  it('still pulls an image whose layers fit', async () => {
    const r = await cli(d, ['image', 'pull', '-q', `${reg.host}/test/small:1`]);
    assert.equal(r.code, 0, r.stderr);
  });

  it('refuses to import the same image as an OCI layout with a 413', async () => {
    const res = await fetch(`${d.url}/v1/images/import?path=${encodeURIComponent(join(work, 'bomb'))}`, { method: 'POST' });
    assert.equal(res.status, 413);
    const body = (await res.json()) as { code: string; message: string };
    assert.equal(body.code, 'payload_too_large');
    assert.match(body.message, /--max-layer-size/);
    assert.equal(readdirSync(join(imagesDir(), 'tmp')).length, 0);
  });

  it('refuses to import it as a docker save archive', async () => {
    const file = join(work, 'bomb.tar');
    dockerArchive(join(work, 'bomb'), file, 'local/bomb:1');
    const r = await cli(d, ['image', 'import', file]);
    assert.equal(r.code, 65, r.stderr + d.log());
    assert.match(r.stderr, /--max-layer-size/);
    assert.equal(readdirSync(join(imagesDir(), 'tmp')).length, 0);
  });

  it('refuses to import a compressed archive that decompresses past the limit', async () => {
    const file = join(work, 'bomb.tar');
    const gz = spawnSync('gzip', ['-k', '-f', file]);
    assert.equal(gz.status, 0);
    const r = await cli(d, ['image', 'import', `${file}.gz`]);
    assert.equal(r.code, 65, r.stderr);
    assert.match(r.stderr, /--max-layer-size/);
    assert.equal(readdirSync(join(imagesDir(), 'tmp')).length, 0);
  });
});

describe('an import archive is hostile input too', () => {
  it('refuses an archive whose manifest.json is a FIFO at once, instead of blocking on it', async () => {
    const pack = tar.pack();
    pack.entry({ name: 'manifest.json', type: 'fifo' });
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const c of pack) chunks.push(c as Buffer);
    const res = await fetch(`${d.url}/v1/images/import`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.concat(chunks), signal: AbortSignal.timeout(60_000) });
    assert.equal(res.status, 400);
    assert.match(((await res.json()) as { message: string }).message, /manifest\.json is not a regular file/);
    assert.equal(readdirSync(join(imagesDir(), 'tmp')).length, 0);
  });
});

describe('cordon serve limit flags', () => {
  for (const args of [['--max-layer-size', 'lots'], ['--max-layer-size', '0'], ['--max-layer-entries', '-5']]) {
    it(`refuses ${args.join(' ')}`, () => {
      const r = spawnSync(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:1', '--data-dir', join(work, 'never'), ...args], { encoding: 'utf8', timeout: 60_000 });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, new RegExp(args[0]));
    });
  }
});
