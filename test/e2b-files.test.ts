// The official `e2b` SDK against a cordon daemon: files over envd (RPC and /files).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { FileNotFoundError, Sandbox, type FilesystemEvent } from 'e2b';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';

let d: TestDaemon;
let sb: Sandbox;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  d = await startDaemon('e2b-files');
  sb = await Sandbox.create({ apiKey: 'e2b_dummy', apiUrl: d.url, sandboxUrl: d.url, domain: 'cordon.invalid', timeoutMs: 600_000 });
});
after(async () => {
  await sb?.kill().catch(() => {});
  await d.cleanup();
});

test('write and read text, bytes, streams; relative paths land in the home directory', async () => {
  const info = await sb.files.write('notes.txt', 'hello e2b');
  assert.equal(info.path, '/home/user/notes.txt');
  assert.equal(await sb.files.read('/home/user/notes.txt'), 'hello e2b');

  const bytes = new Uint8Array([0, 1, 2, 250, 255]);
  await sb.files.write('/tmp/bin.dat', bytes.buffer);
  assert.deepEqual([...(await sb.files.read('/tmp/bin.dat', { format: 'bytes' }))], [...bytes]);

  const big = 'x'.repeat(300_000);
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new TextEncoder().encode(big));
      c.close();
    },
  });
  await sb.files.write('/tmp/streamed.txt', stream);
  const rs = await sb.files.read('/tmp/streamed.txt', { format: 'stream' });
  let n = 0;
  for await (const chunk of rs as unknown as AsyncIterable<Uint8Array>) n += chunk.length;
  assert.equal(n, big.length);

  assert.equal((await sb.commands.run('stat -c %U /home/user/notes.txt')).stdout.trim(), 'user', 'files belong to the calling user');
  await assert.rejects(sb.files.read('/nope/missing.txt'), (e: unknown) => e instanceof FileNotFoundError);
});

test('multiple files at once, gzip both ways, metadata', async () => {
  const res = await sb.files.write([
    { path: '/tmp/multi/a.txt', data: 'A' },
    { path: '/tmp/multi/b.txt', data: 'B' },
  ]);
  assert.deepEqual(res.map((r) => r.path).sort(), ['/tmp/multi/a.txt', '/tmp/multi/b.txt']);
  assert.equal(await sb.files.read('/tmp/multi/b.txt'), 'B');

  await sb.files.write('/tmp/gz.txt', 'compressed '.repeat(1000), { gzip: true });
  assert.equal(await sb.files.read('/tmp/gz.txt', { gzip: true }), 'compressed '.repeat(1000));
  // On the wire: a client that accepts gzip gets it for the 11 KB file; a file of a few bytes comes
  // as it is, with its length; a directory is refused.
  await sb.files.write('/tmp/small.txt', 'tiny');
  const get = (path: string) =>
    fetch(`${d.url}/files?path=${encodeURIComponent(path)}&username=user`, {
      headers: { 'e2b-sandbox-id': sb.sandboxId, 'e2b-sandbox-port': '49983', 'x-access-token': (sb as unknown as { envdAccessToken: string }).envdAccessToken, 'accept-encoding': 'gzip' },
    });
  const gz = await get('/tmp/gz.txt');
  assert.equal(gz.headers.get('content-encoding'), 'gzip');
  assert.equal(await gz.text(), 'compressed '.repeat(1000));
  const small = await get('/tmp/small.txt');
  assert.deepEqual([small.headers.get('content-encoding'), small.headers.get('content-length'), await small.text()], [null, '4', 'tiny']);
  const dir = await get('/tmp');
  assert.equal(dir.status, 400);
  assert.match(((await dir.json()) as { message: string }).message, /is a directory/);

  const w = await sb.files.write('/tmp/meta.txt', 'm', { metadata: { owner: 'tests' } });
  assert.deepEqual(w.metadata, { owner: 'tests' });
  assert.deepEqual((await sb.files.getInfo('/tmp/meta.txt')).metadata, { owner: 'tests' });
});

test('list with depth, exists, getInfo, makeDir, rename, remove', async () => {
  assert.equal(await sb.files.makeDir('/tmp/tree/sub'), true);
  assert.equal(await sb.files.makeDir('/tmp/tree/sub'), false, 'an existing directory reports false');
  await sb.files.write('/tmp/tree/top.txt', '1');
  await sb.files.write('/tmp/tree/sub/deep.txt', '22');

  const shallow = await sb.files.list('/tmp/tree');
  assert.deepEqual(shallow.map((e) => e.name).sort(), ['sub', 'top.txt']);
  const deep = await sb.files.list('/tmp/tree', { depth: 2 });
  assert.deepEqual(deep.map((e) => e.path).sort(), ['/tmp/tree/sub', '/tmp/tree/sub/deep.txt', '/tmp/tree/top.txt']);

  const info = await sb.files.getInfo('/tmp/tree/sub/deep.txt');
  assert.equal(info.type, 'file');
  assert.equal(info.size, 2);
  assert.equal((await sb.files.getInfo('/tmp/tree/sub')).type, 'dir');

  assert.equal(await sb.files.exists('/tmp/tree/top.txt'), true);
  const moved = await sb.files.rename('/tmp/tree/top.txt', '/tmp/tree/renamed.txt');
  assert.equal(moved.path, '/tmp/tree/renamed.txt');
  assert.equal(await sb.files.exists('/tmp/tree/top.txt'), false);

  await sb.files.remove('/tmp/tree');
  assert.equal(await sb.files.exists('/tmp/tree'), false);
  await assert.rejects(sb.files.getInfo('/tmp/tree'), (e: unknown) => e instanceof FileNotFoundError);
});

test('watchDir (recursive) reports creates, writes, removes', async () => {
  await sb.files.makeDir('/tmp/watched/inner');
  const events: FilesystemEvent[] = [];
  const handle = await sb.files.watchDir('/tmp/watched', (e) => void events.push(e), { recursive: true });
  try {
    await sb.files.write('/tmp/watched/new.txt', 'content');
    await sb.files.write('/tmp/watched/inner/nested.txt', 'n');
    await sb.commands.run('rm /tmp/watched/new.txt');
    const seen = (name: string, type: string) => events.some((e) => e.name === name && e.type === type);
    const end = Date.now() + 20_000;
    while (Date.now() < end && !(seen('new.txt', 'create') && seen('inner/nested.txt', 'create') && seen('new.txt', 'remove'))) await sleep(100);
    assert.ok(seen('new.txt', 'create'), JSON.stringify(events));
    assert.ok(seen('inner/nested.txt', 'create'), JSON.stringify(events));
    assert.ok(seen('new.txt', 'remove'), JSON.stringify(events));
  } finally {
    await handle.stop();
  }
  await assert.rejects(sb.files.watchDir('/tmp/not-there', () => {}), (e: unknown) => e instanceof FileNotFoundError);
});

test('signed upload and download URLs work without headers', async () => {
  const up = await sb.uploadUrl('/tmp/url-upload.txt');
  const form = new FormData();
  form.append('file', new Blob(['via url']), '/tmp/url-upload.txt');
  const put = await fetch(up, { method: 'POST', body: form });
  assert.equal(put.status, 200);
  assert.equal(await sb.files.read('/tmp/url-upload.txt'), 'via url');

  const down = await sb.downloadUrl('/tmp/url-upload.txt');
  const got = await fetch(down);
  assert.equal(got.status, 200);
  assert.equal(await got.text(), 'via url');

  const tampered = new URL(down);
  tampered.searchParams.set('path', '/etc/shadow');
  assert.notEqual((await fetch(tampered)).status, 200, 'a signature only covers its own path');

  const expiring = await sb.downloadUrl('/tmp/url-upload.txt', { useSignatureExpiration: 60 });
  assert.equal((await fetch(expiring)).status, 200);
});
