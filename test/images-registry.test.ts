import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { APP_CONFIG, appEntries, baseEntries, layerTar, push, writeLayout, type Built } from './helpers/oci-image.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';
import { startProxy, type TcpProxy } from './helpers/tcp-proxy.js';

// Pulls from a real docker-registry on loopback: progress, auth, multi-arch, zstd, corrupt blobs,
// a registry dying mid-pull, and concurrent pulls sharing one fetch per blob.

const AUTH = { username: 'tester', password: 's3cret-pw' };
let reg: TestRegistry;
let authReg: TestRegistry;
let proxy: TcpProxy;
let d: TestDaemon;
let work: string;
let app: Built;
let big: Built;
let small: Built;

const layersDir = () => join(d.dataDir, 'images', 'layers');
const hasLayer = (diffOrHex: string) => existsSync(join(layersDir(), diffOrHex.replace('sha256:', '')));
const tmpEmpty = () => readdirSync(join(d.dataDir, 'images', 'tmp')).length === 0;

before(async () => {
  work = mkdtempSync('/var/lib/cordon-test/imgbuild-');
  reg = await startRegistry('plain');
  authReg = await startRegistry('auth', { auth: AUTH });
  proxy = await startProxy(reg.host);
  d = await startDaemon('images-registry');
  const base = await layerTar(baseEntries());
  const appLayer = await layerTar(appEntries());
  app = writeLayout(join(work, 'app'), { layers: [{ tar: base, compression: 'gzip' }, { tar: appLayer, compression: 'zstd' }], config: APP_CONFIG });
  push(join(work, 'app'), `${reg.host}/test/app:1`);
  push(join(work, 'app'), `${authReg.host}/test/app:1`, { auth: AUTH });
  const arm = { layers: [{ tar: await layerTar([{ name: 'arm.txt', content: 'arm' }]), compression: 'gzip' as const }], config: {}, architecture: 'arm64' };
  writeLayout(join(work, 'multi'), { layers: [{ tar: base, compression: 'gzip' }], config: { Cmd: ['/bin/sh'] } }, { others: [arm] });
  push(join(work, 'multi'), `${reg.host}/test/multi:1`, { all: true });
  big = writeLayout(join(work, 'big'), { layers: [{ tar: await layerTar([{ name: 'big.bin', content: randomBytes(24 * 1024 * 1024) }]), compression: 'none' }], config: {} });
  push(join(work, 'big'), `${reg.host}/test/big:1`);
  small = writeLayout(join(work, 'small'), { layers: [{ tar: await layerTar([{ name: 'small.txt', content: randomBytes(200_000).toString('hex') }]), compression: 'gzip' }], config: {} });
  push(join(work, 'small'), `${reg.host}/test/corrupt:1`);
});

after(async () => {
  await d?.cleanup();
  await proxy?.close();
  await reg?.cleanup();
  await authReg?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

describe('image pull from a loopback registry', () => {
  it('pulls with per-layer and total progress, then lists and inspects the image', async () => {
    const r = await cli(d, ['image', 'pull', `${reg.host}/test/app:1`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /total: .*\(2\/2 layers\)/);
    assert.match(r.stderr, /[0-9a-f]{12}: done/);
    assert.match(r.stdout, new RegExp(`${reg.host}/test/app:1 ${app.manifestDigest}`));
    const ls = JSON.parse((await cli(d, ['image', 'ls', '--json'])).stdout) as { name: string }[];
    assert.ok(ls.some((i) => i.name === `${reg.host}/test/app:1`));
    const info = JSON.parse((await cli(d, ['image', 'inspect', `${reg.host}/test/app:1`])).stdout);
    assert.equal(info.id, app.configDigest);
    assert.deepEqual(info.config.entrypoint, ['/app/run.sh']);
    assert.equal(info.config.user, 'app');
    assert.equal(info.layers[1].media_type, 'application/vnd.oci.image.layer.v1.tar+zstd');
    const short = await cli(d, ['image', 'inspect', app.configDigest.slice(7, 19)]);
    assert.equal(JSON.parse(short.stdout).name, `${reg.host}/test/app:1`);
  });

  it('has quiet and --json modes for scripts', async () => {
    const q = await cli(d, ['image', 'pull', '-q', `${reg.host}/test/app:1`]);
    assert.equal(q.code, 0, q.stderr);
    assert.equal(q.stdout.trim(), app.configDigest);
    assert.equal(q.stderr, '');
    const j = await cli(d, ['image', 'pull', '--json', `${reg.host}/test/app:1`]);
    assert.equal(JSON.parse(j.stdout).digest, app.manifestDigest);
  });

  it('picks the host platform from a multi-arch index', async () => {
    const img = await d.client.images.pull(`${reg.host}/test/multi:1`);
    assert.equal(img.architecture, 'amd64');
    assert.equal(img.layers.length, 1);
    assert.deepEqual(img.config.cmd, ['/bin/sh']);
  });

  it('asks for credentials, then pulls with basic auth', async () => {
    const denied = await cli(d, ['image', 'pull', `${authReg.host}/test/app:1`]);
    assert.equal(denied.code, 77);
    assert.match(denied.stderr, /denied access.*credentials/);
    const wrong = await d.client.images.pull(`${authReg.host}/test/app:1`, { username: AUTH.username, password: 'nope' }).catch((e) => e);
    assert.equal(wrong.code, 'unauthenticated');
    const ok = await cli(d, ['image', 'pull', '--json', '--username', AUTH.username, '--password-stdin', `${authReg.host}/test/app:1`], `${AUTH.password}\n`);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).id, app.configDigest);
  });

  it('rejects a corrupted blob and keeps nothing of it', async () => {
    writeFileSync(reg.blobPath(small.layerDigests[0]), randomBytes(4096));
    const r = await cli(d, ['image', 'pull', `${reg.host}/test/corrupt:1`]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /corrupt/);
    const info = await d.client.images.get(`${reg.host}/test/corrupt:1`).catch((e) => e);
    assert.equal(info.code, 'not_found');
    assert.ok(tmpEmpty(), 'no partial layer left in tmp');
    assert.equal(readdirSync(layersDir()).length, 2, 'only the app layers are stored');
  });

  it('survives a registry that dies mid-pull, and pulls again once it is back', async () => {
    const ref = `${proxy.host}/test/big:1`;
    proxy.cutAfter(8 * 1024 * 1024, () => reg.kill());
    const err = await d.client.images.pull(ref).catch((e) => e);
    assert.ok(err instanceof Error, 'pull failed');
    assert.equal((err as { code?: string }).code, 'unavailable', err.message);
    assert.ok(tmpEmpty(), 'the half layer was cleaned up');
    assert.equal(readdirSync(layersDir()).length, 2, 'no half layer is marked complete');
    await reg.restart();
    proxy.resume();
    const img = await d.client.images.pull(ref);
    assert.ok(hasLayer(img.layers[0].diff_id));
  });

  it('fetches each blob once when the same image is pulled concurrently', async () => {
    for (const i of await d.client.images.list()) await d.client.images.remove(i.name);
    const pr = await d.client.images.prune();
    assert.equal(pr.kept_layers, 0, JSON.stringify(pr));
    assert.equal(readdirSync(layersDir()).length, 0);
    proxy.blobGets.clear();
    const ref = `${proxy.host}/test/app:1`;
    const seen: string[] = [];
    const [a, b, c] = await Promise.all([
      d.client.images.pull(ref, { onProgress: (ev) => ev.type === 'layer' && seen.push(ev.status) }),
      d.client.images.pull(ref),
      d.client.images.pull(ref),
    ]);
    assert.equal(a.id, b.id);
    assert.equal(c.id, a.id);
    for (const l of app.layerDigests) assert.equal(proxy.blobGets.get(l), 1, `blob ${l} fetched ${proxy.blobGets.get(l)} times`);
    assert.equal(proxy.blobGets.get(app.configDigest), 1);
    assert.ok(seen.includes('done'));
  });

  it('removes images and prunes unused layers', async () => {
    const rm = await cli(d, ['image', 'rm', '--json', `${proxy.host}/test/app:1`]);
    assert.deepEqual(JSON.parse(rm.stdout).removed, [`${proxy.host}/test/app:1`]);
    const again = await cli(d, ['image', 'rm', `${proxy.host}/test/app:1`]);
    assert.equal(again.code, 66);
    const pr = JSON.parse((await cli(d, ['image', 'prune', '--json'])).stdout);
    assert.ok(Array.isArray(pr.removed_layers));
    const left = (await d.client.images.list()).flatMap((i) => i.layers.map((l) => l.diff_id.slice(7)));
    assert.deepEqual(readdirSync(layersDir()).sort(), [...new Set(left)].sort());
  });

  it('refuses bad references and plain HTTP to non-loopback registries', async () => {
    const bad = await cli(d, ['image', 'pull', 'UPPER:case']);
    assert.equal(bad.code, 64);
    assert.match(bad.stderr, /not valid/);
    const body = await fetch(`${d.url}/v1/images/pull`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ image: 'x', bogus: 1 }) });
    assert.equal(body.status, 400);
  });
});
