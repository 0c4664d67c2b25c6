// One structured line per request: the request id in the X-Request-Id header, in error bodies (native,
// E2B and the 401 alike) and in the log line; a sane incoming id is kept, a hostile one replaced;
// credentials (Authorization, X-API-Key, envd access tokens, signed-URL signatures, tokens in query
// strings) never reach the log; --log-level and --request-log off are obeyed.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';
import { until } from './helpers/assert.js';

const KEY = 'request-log-key-SECRETKEY-4242';
let d: TestDaemon;
let quiet: TestDaemon;
let off: TestDaemon;

before(async () => {
  [d, quiet, off] = await Promise.all([
    startDaemon('reqlog', { apiKey: KEY }),
    startDaemon('reqlog-quiet', { args: ['--log-level', 'warn', '--metrics', 'off'] }),
    startDaemon('reqlog-off', { args: ['--request-log', 'off'] }),
  ]);
});
after(async () => {
  await Promise.all([d, quiet, off].map((x) => x?.cleanup()));
});

interface Line {
  level: number;
  msg: string;
  request_id: string;
  method: string;
  url: string;
  route: string;
  status: number;
  duration_ms: number;
  error?: string;
  sandbox_id?: string;
}

function lines(x: TestDaemon): Line[] {
  return x
    .log()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Line)
    .filter((l) => l.msg === 'request');
}

async function lineFor(x: TestDaemon, id: string): Promise<Line> {
  let found: Line | undefined;
  await until(`the log line of request ${id}`, () => !!(found = lines(x).find((l) => l.request_id === id)));
  return found!;
}

const auth = { authorization: `Bearer ${KEY}` };

test('a generated id comes back in the header, the error body and the log line', async () => {
  const res = await fetch(`${d.url}/v1/sandboxes/nosuchbox`, { headers: auth });
  assert.equal(res.status, 404);
  const id = res.headers.get('x-request-id')!;
  assert.match(id, /^[0-9a-f]{16}$/);
  const body = (await res.json()) as Record<string, unknown>;
  assert.equal(body.code, 'not_found');
  assert.equal(body.request_id, id);
  const line = await lineFor(d, id);
  assert.equal(line.status, 404);
  assert.equal(line.method, 'GET');
  assert.equal(line.route, '/v1/sandboxes/:id');
  assert.equal(line.sandbox_id, 'nosuchbox');
  assert.equal(line.error, 'not_found');
  assert.equal(line.level, 30);
  assert.ok(line.duration_ms >= 0);
  const ok = await fetch(`${d.url}/v1/info`, { headers: auth });
  assert.equal(ok.status, 200);
  assert.ok(!('request_id' in ((await ok.json()) as object)), 'successful bodies are left alone');
  assert.equal((await lineFor(d, ok.headers.get('x-request-id')!)).status, 200);
});

test('a sane incoming X-Request-Id is kept; a hostile one is replaced', async () => {
  const kept = await fetch(`${d.url}/v1/info`, { headers: { ...auth, 'x-request-id': 'edge-7f3a.9:1_b' } });
  assert.equal(kept.headers.get('x-request-id'), 'edge-7f3a.9:1_b');
  await lineFor(d, 'edge-7f3a.9:1_b');
  for (const bad of ['a'.repeat(129), 'has space', 'quote"inside', '{"json":1}', '../../etc', 'new\tline']) {
    const res = await fetch(`${d.url}/v1/info`, { headers: { ...auth, 'x-request-id': bad } });
    const id = res.headers.get('x-request-id')!;
    assert.match(id, /^[0-9a-f]{16}$/, `${JSON.stringify(bad)} is replaced by a fresh id`);
    await lineFor(d, id);
  }
  assert.ok(!d.log().includes('a'.repeat(129)), 'a refused id is not logged either');
});

test('401, E2B and validation errors carry the id and keep their shape', async () => {
  const unauth = await fetch(`${d.url}/v1/sandboxes`);
  assert.equal(unauth.status, 401);
  const u = (await unauth.json()) as Record<string, unknown>;
  assert.equal(u.code, 'unauthenticated');
  assert.equal(u.request_id, unauth.headers.get('x-request-id'));
  assert.equal((await lineFor(d, u.request_id as string)).status, 401);

  const e2b = await fetch(`${d.url}/sandboxes/nosuchbox`, { headers: { 'x-api-key': KEY } });
  assert.equal(e2b.status, 404);
  const e = (await e2b.json()) as Record<string, unknown>;
  assert.equal(e.code, 404, "E2B's {code, message} shape is intact");
  assert.equal(typeof e.message, 'string');
  assert.equal(e.request_id, e2b.headers.get('x-request-id'));

  const invalid = await fetch(`${d.url}/v1/sandboxes`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"memory": -5}' });
  assert.equal(invalid.status, 400);
  const i = (await invalid.json()) as Record<string, unknown>;
  assert.equal(i.code, 'invalid_argument');
  assert.equal(i.request_id, invalid.headers.get('x-request-id'));
});

test('credentials never reach the log', async () => {
  const secrets = ['BEARERSECRET1', 'XAPIKEYSECRET2', 'SIGSECRET3', 'ACCESSTOKENSECRET4', 'ENVDTOKENSECRET5', 'PASSWORDSECRET6'];
  const ids: string[] = [];
  const send = async (path: string, headers: Record<string, string>) => {
    const res = await fetch(`${d.url}${path}`, { headers });
    await res.arrayBuffer();
    ids.push(res.headers.get('x-request-id')!);
  };
  await send('/v1/info', { authorization: `Bearer ${secrets[0]}` });
  await send('/v1/info', { 'x-api-key': secrets[1] });
  await send('/v1/info', { ...auth });
  // A signed file URL (the envd path, answered outside the routes) and tokens in query strings.
  await send(`/files?path=%2Ftmp%2Fx&username=user&signature=${secrets[2]}&signature_expiration=99999999999`, { 'e2b-sandbox-id': 'nosuchbox', 'e2b-sandbox-port': '49983' });
  await send(`/v1/info?access_token=${secrets[3]}&Password=${secrets[5]}&keep=visible`, { ...auth });
  await send('/files?path=%2Ftmp%2Fx', { 'e2b-sandbox-id': 'nosuchbox', 'e2b-sandbox-port': '49983', 'x-access-token': secrets[4] });
  for (const id of ids) await lineFor(d, id);
  const text = d.log();
  for (const s of secrets) assert.ok(!text.includes(s), `${s} is not in the log`);
  assert.ok(!text.includes(KEY), 'the API key is not in the log');
  const withQuery = await lineFor(d, ids[4]);
  assert.match(withQuery.url, /access_token=\[REDACTED\]&Password=\[REDACTED\]&keep=visible/);
  assert.match((await lineFor(d, ids[3])).url, /signature=\[REDACTED\]/);
});

test('--log-level warn drops request lines below it; --request-log off writes none; ids stay', async () => {
  const q = await fetch(`${quiet.url}/v1/sandboxes/nosuchbox`);
  assert.equal(q.status, 404);
  const qid = q.headers.get('x-request-id')!;
  assert.equal(((await q.json()) as Record<string, unknown>).request_id, qid);
  assert.equal((await fetch(`${quiet.url}/metrics`)).status, 404, '--metrics off serves no /metrics');
  const o = await fetch(`${off.url}/v1/sandboxes/nosuchbox`);
  const oid = o.headers.get('x-request-id')!;
  assert.equal(((await o.json()) as Record<string, unknown>).request_id, oid);
  // Lines are written as the response closes: a request after these bounds the wait.
  const marker = await fetch(`${d.url}/v1/info`, { headers: auth });
  await lineFor(d, marker.headers.get('x-request-id')!);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(lines(quiet).length, 0, 'info lines are below warn');
  assert.ok(!quiet.log().includes(qid));
  assert.equal(lines(off).length, 0);
  assert.ok(!off.log().includes(oid));
});

test('on a terminal the line is short and readable, not JSON', async () => {
  const { createLogger } = await import('../src/api/request-log.js');
  let out = '';
  const tty = { isTTY: true, write: (s: string) => ((out += s), true) } as unknown as NodeJS.WriteStream;
  const log = createLogger('info', tty);
  log.info({ request_id: 'r1', method: 'GET', url: '/v1/info', route: '/v1/info', status: 200, duration_ms: 1.5 }, 'request');
  log.debug({ request_id: 'r2' }, 'hidden below info');
  await new Promise((r) => setImmediate(r));
  assert.match(out, /^\d\d:\d\d:\d\d\.\d{3} INFO  GET \/v1\/info 200 1\.5ms {2}request_id=r1 route=\/v1\/info\n$/);
});
