// SDK-side interception callbacks, on every runtime, against the test's fake internet only: rules
// with action callback send each matching request to the SDK client (sandbox.onRequest), which
// blocks one path, rewrites headers on another and sets a response header after seeing the status;
// a callback that never answers gets the rule's on_timeout action (allow on one rule, block on
// another); with no client connected, on_timeout applies at once.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { InterceptedRequest, Interceptor, Sandbox } from '../src/sdk/index.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, tearDownNetSuite, type FakeInternet } from './helpers/net-fake-internet.js';

const SLOT = 14;
let d: TestDaemon;
let fi: FakeInternet;

before(async () => {
  fi = await startFakeInternet(SLOT);
  d = await startDaemon('net-callbacks', { args: fi.daemonArgs(SLOT) });
});
after(() => tearDownNetSuite(d, SLOT, fi));

const curl = async (sb: Sandbox, args: string) => {
  const r = await sb.exec(['sh', '-c', `curl -sS --max-time 15 ${args}`], { timeout: 30 });
  return { code: r.exit_code, out: r.stdout.trim(), err: r.stderr.trim() };
};
const status = async (sb: Sandbox, url: string) => (await curl(sb, `-o /dev/null -w '%{http_code}' ${url}`)).out;

const rules = [
  { name: 'gate', phase: 'before', path: '/cb/*', action: 'callback', timeout_ms: 5000, on_timeout: 'block' },
  { name: 'slow', phase: 'before', path: '/slow*', action: 'callback', timeout_ms: 400, on_timeout: 'allow' },
  { name: 'silent', phase: 'before', path: '/silent*', action: 'callback', timeout_ms: 400, on_timeout: 'block' },
  { name: 'resp', phase: 'after', path: '/after*', action: 'callback', timeout_ms: 5000 },
];

for (const runtime of RUNTIMES) {
  describe(`interception callbacks on ${runtime}`, () => {
    let sb: Sandbox;
    let hook: Interceptor | undefined;
    const seen: InterceptedRequest[] = [];
    before(async () => {
      sb = await d.client.create({ runtime, network: { allow_hosts: ['api.test'], rules } });
      hook = await sb.onRequest((req) => {
        seen.push(req);
        if (req.phase === 'after') return { action: 'mutate', set_response_headers: { 'x-seen-status': String(req.status), 'x-seen-upstream': String(req.response_headers?.['x-upstream']) } };
        if (req.path === '/cb/blocked') return { action: 'block', reason: 'not this one' };
        if (req.path === '/cb/rewrite') return { action: 'mutate', set_headers: { 'X-From-Callback': 'yes' }, delete_headers: ['x-drop'], set_query: { q: 'cb' } };
        if (req.path === '/cb/ok') return { action: 'allow' };
        return new Promise<undefined>(() => {}); // /slow and /silent: never answers
      });
    });
    after(async () => {
      await hook?.close();
      await sb?.remove().catch(() => {});
    });

    test('a callback blocks one path and rewrites headers on another; it sees the request summary', async () => {
      assert.equal(await status(sb, 'https://api.test/cb/blocked'), '403');
      const rw = await curl(sb, `-H 'X-Drop: 1' -H 'X-Keep: 2' 'https://api.test/cb/rewrite?q=1'`);
      assert.equal(rw.code, 0, rw.err);
      const echo = JSON.parse(rw.out);
      assert.equal(echo.headers['x-from-callback'], 'yes');
      assert.equal(echo.headers['x-drop'], undefined);
      assert.equal(echo.headers['x-keep'], '2');
      assert.equal(echo.url, '/cb/rewrite?q=cb');
      assert.equal(await status(sb, 'http://api.test/cb/ok'), '200');
      const req = seen.find((r) => r.path === '/cb/rewrite');
      assert.ok(req, 'the handler saw the request');
      assert.deepEqual([req.phase, req.rule, req.method, req.host, req.query], ['before', 'gate', 'GET', 'api.test', 'q=1']);
      assert.equal(req.headers['x-drop'], '1');
      assert.match(String(req.headers['user-agent']), /curl/);
      assert.equal(await status(sb, 'https://api.test/not-matched'), '200');
      assert.ok(!seen.some((r) => r.path === '/not-matched'), 'requests no rule matches are not sent');
      const events = (await sb.events_()).filter((e) => e.type === 'network').map((e) => e.data as Record<string, unknown>);
      assert.ok(events.some((e) => e.blocked === true && String(e.url).endsWith('/cb/blocked') && /callback gate: not this one/.test(String(e.block_reason))));
    });

    test('phase after: the callback sees status and response headers and sets a response header', async () => {
      const head = await curl(sb, '-D - -o /dev/null https://api.test/after');
      assert.match(head.out, /x-seen-status: 200/i);
      assert.match(head.out, /x-seen-upstream: fake/i);
      const req = seen.find((r) => r.phase === 'after');
      assert.equal(req?.status, 200);
    });

    test('a callback that never answers: on_timeout allow lets it through, on_timeout block blocks it', async () => {
      assert.equal(await status(sb, 'https://api.test/slow'), '200');
      assert.ok(seen.some((r) => r.path === '/slow'), 'the callback was asked');
      assert.equal(await status(sb, 'https://api.test/silent'), '403');
      const events = (await sb.events_()).filter((e) => e.type === 'network').map((e) => e.data as Record<string, unknown>);
      assert.ok(events.some((e) => e.blocked === true && /did not answer within 400 ms \(on_timeout block\)/.test(String(e.block_reason))));
    });

    test('with no client connected the on_timeout action applies; bad callback rules are refused', async () => {
      await hook!.close();
      hook = undefined;
      const asked = seen.length;
      assert.equal(await status(sb, 'https://api.test/cb/rewrite'), '403', 'gate: on_timeout block');
      assert.equal(await status(sb, 'https://api.test/slow'), '200', 'slow: on_timeout allow');
      assert.equal(seen.length, asked, 'nobody was asked');
      const events = (await sb.events_()).filter((e) => e.type === 'network').map((e) => e.data as Record<string, unknown>);
      assert.ok(events.some((e) => /no callback client is connected/.test(String(e.block_reason))));
      const bad = await fetch(`${d.url}/v1/sandboxes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ runtime, network: { allow_hosts: ['api.test'], rules: [{ action: 'block', timeout_ms: 10 }] } }) });
      assert.equal(bad.status, 400);
      const bad2 = await fetch(`${d.url}/v1/sandboxes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ runtime, network: { allow_hosts: ['api.test'], rules: [{ action: 'callback', on_timeout: 'maybe' }] } }) });
      assert.equal(bad2.status, 400);
      await assert.rejects(d.client.sandbox('nosuchsandbox').onRequest(() => undefined));
    });
  });
}
