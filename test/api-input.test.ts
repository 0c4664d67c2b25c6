// Bad input on every /v1 endpoint: a 4xx that names the field, and nothing created or changed.
// Also auth (401), 404, 413, 429 past --max-sandboxes, 503 under --min-host-memory, and the OpenAPI document.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';

const KEY = 'test-key-0123456789';
let d: TestDaemon;
let s: Sandbox;

before(async () => {
  d = await startDaemon('api-input', { apiKey: KEY, args: ['--max-sandboxes', '2', '--runtime', 'crun'] });
  s = await d.client.create({ labels: { suite: 'api' } });
});
after(async () => {
  for (const x of await d.client.list().catch(() => [])) await d.client.remove(x.id, { force: true }).catch(() => {});
  await d.cleanup();
});

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = { authorization: `Bearer ${KEY}` }) {
  const init: RequestInit = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    (init.headers as Record<string, string>)['content-type'] = 'application/json';
  }
  const res = await fetch(`${d.url}${path}`, init);
  const text = await res.text();
  let json: { code?: string; message?: string } & Record<string, unknown> = {};
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, json, text };
}

/** A 400 whose message names `field`. */
async function bad(method: string, path: string, body: unknown, field: string) {
  const r = await call(method, path, body);
  assert.equal(r.status, 400, `${method} ${path} ${JSON.stringify(body)?.slice(0, 80)} → ${r.status} ${r.text.slice(0, 200)}`);
  assert.equal(r.json.code, 'invalid_argument');
  assert.ok(r.json.message?.includes(field), `message names ${field}: ${r.json.message}`);
}

describe('bad input is refused with a message naming the field', () => {
  test('POST /v1/sandboxes', async () => {
    const before = (await d.client.list()).map((x) => x.id);
    const cases: [unknown, string][] = [
      [{ bogus: 1 }, 'bogus'],
      [{ memory: 'lots' }, 'memory'],
      [{ memory: 1024 }, 'memory'],
      [{ memory: -5 }, 'memory'],
      [{ disk: '1k' }, 'disk'],
      [{ timeout: 'soon' }, 'timeout'],
      [{ timeout: '-1s' }, 'timeout'],
      [{ timeout: '48h' }, 'timeout'],
      [{ cpus: 'two' }, 'cpus'],
      [{ cpus: 0 }, 'cpus'],
      [{ pids: 2 }, 'pids'],
      [{ pids: 1.5 }, 'pids'],
      [{ runtime: 'docker' }, 'runtime'],
      [{ env: { '1BAD': 'x' } }, 'env'],
      [{ env: { OK: 5 } }, 'env'],
      [{ labels: { 'bad key!': 'x' } }, 'labels'],
      [{ workdir: 'relative/dir' }, 'workdir'],
      [{ workdir: '/a/../b' }, 'workdir'],
      [{ template: 'Base!' }, 'template'],
      [{ template: 'base', image: 'debian' }, 'image'],
      [{ cmd: 'echo hi' }, 'cmd'],
      [{ tmpfs: [{ path: '/x', size: 'huge' }] }, 'tmpfs'],
      [{ tmpfs: [{ path: 'x' }] }, 'tmpfs'],
      [{ hostname: '-bad-' }, 'hostname'],
      [{ read_only_rootfs: 'yes' }, 'read_only_rootfs'],
      [{ user: 'no such user' }, 'user'],
    ];
    for (const [body, field] of cases) await bad('POST', '/v1/sandboxes', body, field);
    const missing = await call('POST', '/v1/sandboxes', { template: 'no-such-template' });
    assert.equal(missing.status, 404);
    assert.match(missing.json.message ?? '', /no-such-template/);
    const junk = await call('POST', '/v1/sandboxes', '{"memory": ');
    assert.equal(junk.status, 400);
    assert.deepEqual((await d.client.list()).map((x) => x.id), before, 'nothing was created');
  });

  test('list, ids and the lifecycle endpoints', async () => {
    await bad('GET', '/v1/sandboxes?state=bogus', undefined, 'state');
    await bad('GET', '/v1/sandboxes?label=novalue', undefined, 'label');
    await bad('GET', '/v1/sandboxes?colour=red', undefined, 'colour');
    for (const id of ['UPPER', 'a_b', 'x'.repeat(80), '-lead']) await bad('GET', `/v1/sandboxes/${id}`, undefined, 'id');
    await bad('POST', `/v1/sandboxes/${s.id}/stop`, { timeout: 'later' }, 'timeout');
    await bad('POST', `/v1/sandboxes/${s.id}/stop`, { grace: 1 }, 'grace');
    await bad('POST', `/v1/sandboxes/${s.id}/timeout`, { timeout: 'x' }, 'timeout');
    await bad('POST', `/v1/sandboxes/${s.id}/timeout`, {}, 'timeout');
    await bad('PATCH', `/v1/sandboxes/${s.id}/resources`, { memory: 'x' }, 'memory');
    await bad('PATCH', `/v1/sandboxes/${s.id}/resources`, { memory: '1k' }, 'memory');
    await bad('PATCH', `/v1/sandboxes/${s.id}/resources`, { cpus: 2 }, 'cpus');
    await bad('DELETE', `/v1/sandboxes/${s.id}?force=maybe`, undefined, 'force');
    await bad('GET', `/v1/sandboxes/${s.id}/events?after=-1`, undefined, 'after');
    const info = (await d.client.get(s.id)).info;
    assert.equal(info.state, 'running', 'the sandbox is untouched');
    assert.equal(info.expires_at, null);
    assert.equal(info.config.memory, s.info.config.memory);
  });

  test('exec and process endpoints', async () => {
    const base = `/v1/sandboxes/${s.id}`;
    await bad('POST', `${base}/exec`, { cmd: [] }, 'cmd');
    await bad('POST', `${base}/exec`, {}, 'cmd');
    await bad('POST', `${base}/exec`, { cmd: ['true'], timeout: 'x' }, 'timeout');
    await bad('POST', `${base}/exec`, { cmd: ['true'], user: 'bad user!' }, 'user');
    await bad('POST', `${base}/exec`, { cmd: ['true'], stdin_encoding: 'hex' }, 'stdin_encoding');
    await bad('POST', `${base}/exec`, { cmd: ['true'], env: { 'A-B': '1' } }, 'env');
    await bad('POST', `${base}/exec`, { cmd: ['a\u0000b'] }, 'cmd');
    await bad('POST', `${base}/exec`, { cmd: ['true'], shell: true }, 'shell');
    await bad('POST', `${base}/processes`, { cmd: ['sleep', '1'], tag: '1bad' }, 'tag');
    await bad('POST', `${base}/processes`, { cmd: ['sleep', '1'], pty: { cols: 0, rows: 10 } }, 'pty');
    const p = await s.startProcess(['sleep', '1000'], { tag: 'victim', stdin: true });
    await bad('POST', `${base}/processes/${p.pid}/signal`, { signal: 'SIGFOO' }, 'signal');
    await bad('POST', `${base}/processes/${p.pid}/signal`, {}, 'signal');
    await bad('POST', `${base}/processes/${p.pid}/resize`, { cols: 'a', rows: 1 }, 'cols');
    await bad('POST', `${base}/processes/${p.pid}/stdin`, { data: 5 }, 'data');
    await bad('POST', `${base}/processes/${p.pid}/stdin`, { data: 'x', encoding: 'rot13' }, 'encoding');
    await bad('GET', `${base}/processes/${p.pid}/events?replay=perhaps`, undefined, 'replay');
    const r404 = await call('POST', `${base}/processes/424242/signal`, { signal: 'SIGTERM' });
    assert.equal(r404.status, 404);
    assert.equal((await s.process(p.pid)).running, true, 'the process is untouched');
    assert.equal((await s.processes()).filter((x) => x.running).length, 1, 'no process was started by bad requests');
  });

  test('file endpoints', async () => {
    const base = `/v1/sandboxes/${s.id}/files`;
    await bad('GET', `${base}/content`, undefined, 'path');
    await bad('GET', `${base}/content?path=%2Fa%00b`, undefined, 'path');
    await bad('GET', `${base}/list?path=/&depth=0`, undefined, 'depth');
    await bad('GET', `${base}/list?path=/&depth=x`, undefined, 'depth');
    await bad('GET', `${base}/stat?path=/etc&extra=1`, undefined, 'extra');
    const put = await fetch(`${d.url}${base}/content?path=/root/x&mode=rwx`, { method: 'PUT', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/octet-stream' }, body: 'x' });
    assert.equal(put.status, 400);
    assert.match(await put.text(), /mode/);
    await bad('POST', `${base}/mkdir`, {}, 'path');
    await bad('POST', `${base}/move`, { from: '/etc/hostname' }, 'to');
    await bad('DELETE', `${base}?path=/&recursive=true`, undefined, 'path');
    assert.equal(await s.files.exists('/root/x'), false, 'nothing was written');
    assert.equal((await s.exec(['cat', '/etc/hostname'])).exit_code, 0, 'nothing was moved or removed');
  });
});

describe('status codes', () => {
  test('404 for an unknown sandbox on every kind of endpoint', async () => {
    for (const [m, p, b] of [
      ['GET', '/v1/sandboxes/nosuchsandbox0'],
      ['DELETE', '/v1/sandboxes/nosuchsandbox0?force=true'],
      ['POST', '/v1/sandboxes/nosuchsandbox0/exec', { cmd: ['true'] }],
      ['POST', '/v1/sandboxes/nosuchsandbox0/stop', {}],
      ['GET', '/v1/sandboxes/nosuchsandbox0/files/stat?path=/'],
      ['GET', '/v1/sandboxes/nosuchsandbox0/stats'],
    ] as [string, string, unknown?][]) {
      const r = await call(m, p, b);
      assert.equal(r.status, 404, `${m} ${p}`);
      assert.equal(r.json.code, 'not_found');
      assert.match(r.json.message ?? '', /nosuchsandbox0/);
    }
  });

  test('401 with a missing or wrong API key; /v1/health and the OpenAPI document stay open', async () => {
    for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: KEY }, { 'x-api-key': 'wrong' }] as Record<string, string>[]) {
      const r = await call('GET', '/v1/sandboxes', undefined, headers);
      assert.equal(r.status, 401, JSON.stringify(headers));
      assert.match(r.json.message ?? '', /API key/);
      const c = await call('POST', '/v1/sandboxes', {}, headers);
      assert.equal(c.status, 401);
    }
    assert.equal((await call('GET', '/v1/sandboxes', undefined, { 'x-api-key': KEY })).status, 200);
    assert.equal((await call('GET', '/v1/health', undefined, {})).status, 200);
    const doc = await call('GET', '/v1/openapi.json', undefined, {});
    assert.equal(doc.status, 200);
    assert.match(String(doc.json.openapi), /^3\./);
    const paths = doc.json.paths as Record<string, unknown>;
    for (const p of ['/v1/sandboxes', '/v1/sandboxes/{id}', '/v1/sandboxes/{id}/exec', '/v1/sandboxes/{id}/files/content']) assert.ok(paths[p], `documents ${p}`);
    assert.equal((await d.client.list()).length, 1, 'nothing created without the key');
  });

  test('413 for a JSON body past the limit', async () => {
    const r = await call('POST', `/v1/sandboxes/${s.id}/exec`, { cmd: ['true'], stdin: 'a'.repeat(9 * 1024 * 1024) });
    assert.equal(r.status, 413);
    assert.equal(r.json.code, 'payload_too_large');
    assert.match(r.json.message ?? '', /files\/content/);
  });

  test('a chunked upload refused before its body is read still gets its answer, not a reset', async () => {
    // A template build refused on its query while the client is still streaming the context tar.
    for (let i = 0; i < 4; i++) {
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (sent >= 4 * 1024 * 1024) return c.close();
          sent += 64 * 1024;
          c.enqueue(new Uint8Array(64 * 1024));
        },
      });
      const res = await fetch(`${d.url}/v1/templates?name=refused&memory=1k`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/x-tar' },
        body,
        duplex: 'half',
      } as RequestInit);
      assert.equal(res.status, 400);
      assert.match(((await res.json()) as { message: string }).message, /memory: give a size of at least 32m/);
    }
  });

  test('429 past --max-sandboxes, and the count stays at the cap', async () => {
    const second = await d.client.create({ labels: { suite: 'api' } });
    const r = await call('POST', '/v1/sandboxes', {});
    assert.equal(r.status, 429);
    assert.equal(r.json.code, 'too_many_sandboxes');
    assert.match(r.json.message ?? '', /--max-sandboxes/);
    assert.equal((await d.client.list()).length, 2);
    await second.remove();
  });
});

describe('503 when host memory is below --min-host-memory', () => {
  let low: TestDaemon;
  before(async () => {
    low = await startDaemon('api-lowmem', { args: ['--min-host-memory', '1000g', '--runtime', 'crun'] });
  });
  after(async () => {
    await low?.cleanup();
  });
  test('create is refused with a message about memory, nothing is created', async () => {
    const res = await fetch(`${low.url}/v1/sandboxes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    const j = (await res.json()) as { code: string; message: string };
    assert.equal(res.status, 503);
    assert.equal(j.code, 'insufficient_resources');
    assert.match(j.message, /memory/);
    assert.equal((await low.client.list()).length, 0);
    assert.equal((await fetch(`${low.url}/v1/health`)).status, 200, 'the daemon itself is healthy');
  });
});
