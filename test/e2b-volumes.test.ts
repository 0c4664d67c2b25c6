// The official `e2b` SDK's Volume against cordon: the control plane (/volumes, API key), the content
// API (/volumecontent, the volume's own token, found through E2B_VOLUME_API_URL), and volumeMounts.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Sandbox, Volume, VolumeFileType, VolumePathNotFoundError } from 'e2b';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';

const API_KEY = 'e2b-volume-suite-key';
let d: TestDaemon;
let opts: { apiKey: string; apiUrl: string; domain: string };

before(async () => {
  d = await startDaemon('e2b-volumes', { apiKey: API_KEY, args: ['--runtime', RUNTIMES[0]] });
  process.env.E2B_VOLUME_API_URL = d.url;
  opts = { apiKey: API_KEY, apiUrl: d.url, domain: 'cordon.invalid' };
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  for (const v of await d.client.volumes.list().catch(() => [])) await d.client.volumes.remove(v.id, { force: true }).catch(() => {});
  await d.cleanup();
});

test('create, list, connect, getInfo, destroy', async () => {
  const vol = await Volume.create('e2b-life', opts);
  assert.match(vol.volumeId, /^vol-/);
  assert.equal(vol.name, 'e2b-life');
  assert.ok(vol.token.length > 20);
  assert.ok((await Volume.list(opts)).some((v) => v.volumeId === vol.volumeId && v.name === 'e2b-life'));
  const info = await Volume.getInfo(vol.volumeId, opts);
  assert.equal(info.token, vol.token);
  const again = await Volume.connect(vol.volumeId, opts);
  assert.equal(again.name, 'e2b-life');
  assert.equal(await Volume.destroy(vol.volumeId, opts), true);
  assert.equal(await Volume.destroy(vol.volumeId, opts), false, 'a second destroy finds nothing');
  await assert.rejects(Volume.create('bad/name', opts));
  const noKey = await fetch(`${d.url}/volumes`);
  assert.equal(noKey.status, 401, 'the control plane needs the API key');
});

test('the content API: write, read, list with depth, makeDir, getInfo, updateMetadata, remove', async () => {
  const vol = await Volume.create('e2b-content', opts);
  const w = await vol.writeFile('/docs/readme.txt', 'hello volume');
  assert.equal(w.type, VolumeFileType.FILE);
  assert.equal(w.size, 12);
  assert.equal(await vol.readFile('/docs/readme.txt'), 'hello volume');
  const bytes = await vol.readFile('/docs/readme.txt', { format: 'bytes' });
  assert.equal(Buffer.from(bytes).toString(), 'hello volume');

  const dir = await vol.makeDir('/a/b/c', { force: true });
  assert.equal(dir.type, VolumeFileType.DIRECTORY);
  await assert.rejects(vol.makeDir('/x/y'), (e: unknown) => e instanceof VolumePathNotFoundError, 'no parents without force');
  const one = await vol.list('/');
  assert.deepEqual(one.map((e) => e.name).sort(), ['a', 'docs']);
  const deep = await vol.list('/', { depth: 3 });
  assert.ok(deep.some((e) => e.path === '/a/b/c'));
  assert.ok(deep[0].mtime instanceof Date);

  const st = await vol.getInfo('/docs/readme.txt');
  assert.equal(st.name, 'readme.txt');
  assert.equal(await vol.exists('/docs/nope'), false);
  const upd = await vol.updateMetadata('/docs/readme.txt', { mode: 0o600, uid: 1000, gid: 1000 });
  assert.equal(upd.mode, 0o600);
  assert.equal(upd.uid, 1000);

  await vol.remove('/a');
  assert.equal(await vol.exists('/a'), false);
  await assert.rejects(vol.readFile('/missing.txt'), (e: unknown) => e instanceof VolumePathNotFoundError);

  const wrong = await fetch(`${d.url}/volumecontent/${vol.volumeId}/path?path=/docs`, { headers: { authorization: 'Bearer not-the-token' } });
  assert.equal(wrong.status, 401, 'another token opens nothing');
  const apiKeyOnly = await fetch(`${d.url}/volumecontent/${vol.volumeId}/path?path=/docs`, { headers: { authorization: `Bearer ${API_KEY}` } });
  assert.equal(apiKeyOnly.status, 401, "the daemon's API key is not a volume token");
});

// E2B's create names no runtime: one daemon per runtime, its default.
for (const runtime of RUNTIMES) {
  test(`volumeMounts on ${runtime}: a sandbox sees the volume, writes to it, and get/list echo the mounts`, async () => {
    const t = runtime === RUNTIMES[0] ? d : await startDaemon(`e2b-volumes-${runtime}`, { apiKey: API_KEY, args: ['--runtime', runtime] });
    const o = { ...opts, apiUrl: t.url };
    const vol = await Volume.create('e2b-mounted', o);
    try {
      await vol.writeFile('/seed.txt', 'seeded from outside', { apiUrl: t.url });
      const sbx = await Sandbox.create({ ...o, sandboxUrl: t.url, timeoutMs: 300_000, volumeMounts: { '/mnt/vol': vol } });
      try {
        const r = await sbx.commands.run('cat /mnt/vol/seed.txt && echo written-inside > /mnt/vol/inside.txt');
        assert.equal(r.stdout, 'seeded from outside');
        assert.equal(await vol.readFile('/inside.txt', { apiUrl: t.url }), 'written-inside\n');
        const info = await sbx.getInfo();
        assert.deepEqual(info.volumeMounts, [{ name: 'e2b-mounted', path: '/mnt/vol' }], 'getInfo echoes the mounts');
        assert.deepEqual(await listedMounts(t, sbx.sandboxId), [{ name: 'e2b-mounted', path: '/mnt/vol' }]);
        await assert.rejects(Volume.destroy(vol.volumeId, o), /mounted by/, 'a mounted volume is not destroyed');
      } finally {
        await sbx.kill();
      }
      assert.equal(await Volume.destroy(vol.volumeId, o), true);
    } finally {
      if (t !== d) await t.cleanup();
    }
  });
}

async function listedMounts(t: TestDaemon, id: string): Promise<unknown> {
  const res = await fetch(`${t.url}/v2/sandboxes`, { headers: { 'x-api-key': API_KEY } });
  const list = (await res.json()) as { sandboxID: string; volumeMounts: unknown }[];
  return list.find((s) => s.sandboxID === id)?.volumeMounts;
}
