// Egress policy end to end, on every runtime: a fake internet in its own namespace (DNS, HTTP, HTTPS
// with its own CA) behind --egress-interface; modes, bypass attempts failing closed, secrets, rules.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, type FakeInternet } from './helpers/net-fake-internet.js';

let d: TestDaemon;
let fi: FakeInternet;

before(async () => {
  fi = await startFakeInternet(7);
  d = await startDaemon('net-egress', { args: fi.daemonArgs(7) });
});
after(async () => {
  for (const s of (await d?.client.list().catch(() => [])) ?? []) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d?.cleanup();
  await fi?.close();
});

const sh = async (sb: Sandbox, script: string) => {
  const r = await sb.exec(['sh', '-c', script], { timeout: 30 });
  return { code: r.exit_code, out: r.stdout.trim(), err: r.stderr.trim() };
};
const curl = (sb: Sandbox, args: string) => sh(sb, `curl -sS --max-time 8 ${args}`);

// A DNS query for NAME sent straight to SERVER (a "foreign" resolver), printing the answer's rcode.
const pyDns = (server: string, name: string) =>
  `python3 -c "import socket,struct;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(4);q=struct.pack('>HHHHHH',7,256,1,0,0,0)+b''.join(bytes([len(p)])+p.encode() for p in '${name}'.split('.'))+b'\\0\\0\\1\\0\\1';s.sendto(q,('${server}',53));r=s.recv(512);print('rcode',r[3]&15,'answers',struct.unpack('>H',r[6:8])[0])"`;

for (const runtime of RUNTIMES) {
  describe(`egress on ${runtime}`, () => {
    let allow: Sandbox;

    test('mode none (the default) has no network at all', async () => {
      const sb = await d.client.create({ runtime });
      assert.equal(sb.info.network?.mode ?? 'none', 'none');
      const r = await curl(sb, `http://${fi.api}/`);
      assert.notEqual(r.code, 0);
      await d.client.remove(sb.id, { force: true });
    });

    test('allowlist: the allowed host over HTTP and TLS, nothing else', async () => {
      allow = await d.client.create({ runtime, network: { allow_hosts: ['api.test'] } });
      assert.equal(allow.info.network?.mode, 'allowlist');
      const https = await curl(allow, 'https://api.test/hello?x=1');
      assert.equal(https.code, 0, https.err);
      const body = JSON.parse(https.out);
      assert.equal(body.url, '/hello?x=1');
      assert.equal(body.tls, true);
      assert.equal(body.local !== undefined, true);
      const plain = await curl(allow, 'http://api.test/plain');
      assert.equal(JSON.parse(plain.out).url, '/plain');
      const other = await curl(allow, 'https://other.test/');
      assert.notEqual(other.code, 0, 'other.test is not allowed');
      // Counted on the sandbox's link by the network driver: what it sent and received.
      const st = await allow.stats();
      assert.ok(st.network_rx > 0 && st.network_tx > 0, `network counters after traffic: rx ${st.network_rx}, tx ${st.network_tx}`);
    });

    test('bypasses fail closed: raw IP, foreign DNS, DNS over TCP, IPv6, SNI/Host mismatch, proxy vars unset', async () => {
      assert.notEqual((await curl(allow, `https://${fi.other}/`)).code, 0, 'raw IP over TLS (no SNI)');
      const rawHttp = await curl(allow, `-o /dev/null -w '%{http_code}' http://${fi.other}/`);
      assert.equal(rawHttp.out, '403', 'raw IP over HTTP');
      const foreign = await sh(allow, pyDns(fi.api, 'other.test'));
      assert.match(foreign.out, /rcode 3 answers 0/, `a foreign DNS server is answered by cordon: ${foreign.out} ${foreign.err}`);
      const tcpDns = await sh(allow, `python3 -c "import socket;socket.create_connection(('${fi.api}',53),4)" && echo connected`);
      assert.notEqual(tcpDns.code, 0, 'DNS over TCP');
      const v6 = await curl(allow, `-6 http://[fd00::1]/`);
      assert.notEqual(v6.code, 0, 'IPv6');
      const fronted = await curl(allow, `-o /dev/null -w '%{http_code}' -H 'Host: other.test' https://api.test/`);
      assert.equal(fronted.out, '403', 'Host differs from SNI');
      const noProxy = await sh(allow, `env -u HTTP_PROXY -u HTTPS_PROXY -u http_proxy -u https_proxy curl -sS --max-time 8 https://other.test/`);
      assert.notEqual(noProxy.code, 0, 'unsetting proxy variables changes nothing');
      const udp = await sh(allow, `python3 -c "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2);s.sendto(b'x',('${fi.api}',9999));s.recv(10)"`);
      assert.notEqual(udp.code, 0, 'UDP elsewhere');
    });

    test('DNS rebinding: the first answer stays pinned, private answers are refused', async () => {
      const sb = await d.client.create({ runtime, network: { allow_hosts: ['*.test'] } });
      const first = await curl(sb, `http://rebind-${runtime}.test/a`);
      assert.equal(first.code, 0, first.err);
      const second = await curl(sb, `http://rebind-${runtime}.test/b`);
      assert.equal(JSON.parse(second.out).local, fi.api, 'still the pinned address');
      const priv = await curl(sb, `-o /dev/null -w '%{http_code}' http://private.test/`);
      assert.notEqual(priv.out, '200');
      await d.client.remove(sb.id, { force: true });
    });

    test('open: public hosts yes; private ranges and addresses outside the egress network no', async () => {
      const sb = await d.client.create({ runtime, network: { mode: 'open', add_hosts: [{ host: 'far.test', ip: fi.outside }] } });
      assert.equal((await curl(sb, 'https://other.test/')).code, 0);
      assert.notEqual((await curl(sb, `-o /dev/null -w '%{http_code}' http://private.test/`)).out, '200');
      const far = await curl(sb, `-o /dev/null -w '%{http_code}' http://outside.test/`);
      assert.notEqual(far.out, '200');
      assert.equal(await fi.outsideHits(), 0, 'no packet towards an address outside the fake internet');
      await d.client.remove(sb.id, { force: true });
    });

    test('secrets: substituted toward the listed host only; a leak elsewhere is blocked and reported', async () => {
      const sb = await d.client.create({ runtime, network: { allow_hosts: ['api.test', 'other.test'], secrets: ['TOKEN=s3cr3t-value@api.test'] } });
      const seen = await sh(sb, 'echo $TOKEN');
      assert.match(seen.out, /^CORDON_SECRET_TOKEN_/);
      assert.doesNotMatch(JSON.stringify(sb.info), /s3cr3t-value/);
      const ok = await curl(sb, `-H "Authorization: Bearer $TOKEN" "https://api.test/q?k=$TOKEN" -d "body=$TOKEN"`);
      const echo = JSON.parse(ok.out);
      assert.equal(echo.headers.authorization, 'Bearer s3cr3t-value');
      assert.equal(echo.url, '/q?k=s3cr3t-value');
      assert.equal(echo.body, 'body=s3cr3t-value');
      const plain = await curl(sb, `-H "X-Key: $TOKEN" http://api.test/`);
      assert.equal(JSON.parse(plain.out).headers['x-key'], 's3cr3t-value');
      const leak = await curl(sb, `-H "Authorization: Bearer $TOKEN" https://other.test/`);
      assert.match(leak.out, /ErrSecretLeak/);
      const events = await (await fetch(`${d.url}/v1/sandboxes/${sb.id}/events`)).json() as { type: string; data?: Record<string, unknown> }[];
      const net = events.filter((e) => e.type === 'network');
      assert.ok(net.some((e) => e.data?.secret_leak === 'TOKEN' && e.data?.blocked === true));
      assert.ok(net.some((e) => e.data?.host === 'api.test' && e.data?.status === 200 && e.data?.method === 'POST'));
      assert.doesNotMatch(JSON.stringify(events), /s3cr3t-value/);
      await d.client.remove(sb.id, { force: true });
    });

    test('interception rules: block, request headers/query/path, response headers and body, SSE lines', async () => {
      const sb = await d.client.create({
        runtime,
        network: {
          allow_hosts: ['api.test'],
          rules: [
            { phase: 'before', path: '/admin*', action: 'block' },
            { phase: 'before', methods: ['GET'], path: '/rw*', set_headers: { 'X-Added': 'yes' }, delete_headers: ['X-Drop'], set_query: { q: '2' }, rewrite_path: '/rewritten' },
            { phase: 'after', set_response_headers: { 'X-Cordon': '1' }, delete_response_headers: ['x-remove-me'], body_replacements: [{ find: 'secret-word', replace: 'redacted' }] },
          ],
        },
      });
      assert.equal((await curl(sb, `-o /dev/null -w '%{http_code}' https://api.test/admin/x`)).out, '403');
      const rw = JSON.parse((await curl(sb, `-H 'X-Drop: 1' 'https://api.test/rw?q=1'`)).out);
      assert.equal(rw.url, '/rewritten?q=2');
      assert.equal(rw.headers['x-added'], 'yes');
      assert.equal(rw.headers['x-drop'], undefined);
      const head = await curl(sb, '-D - -o /dev/null https://api.test/h');
      assert.match(head.out, /x-cordon: 1/i);
      assert.doesNotMatch(head.out, /x-remove-me/i);
      const sse = await curl(sb, 'https://api.test/sse');
      assert.match(sse.out, /data: hello redacted/);
      assert.match(sse.out, /data: again redacted/);
      await d.client.remove(sb.id, { force: true });
    });

    test('ports in: -p LOCAL:REMOTE on 127.0.0.1 reaches a server in the sandbox', async () => {
      const local = 20000 + Math.floor(Math.random() * 20000);
      const sb = await d.client.create({ runtime, network: { ports: [`${local}:8000`] } });
      assert.deepEqual(sb.info.network?.ports, [{ address: '127.0.0.1', local_port: local, remote_port: 8000 }]);
      await sh(sb, 'mkdir -p /srv && echo served-from-sandbox > /srv/index.html && (cd /srv && nohup python3 -m http.server 8000 >/dev/null 2>&1 &) ; sleep 1');
      let text = '';
      for (let i = 0; i < 50 && !text; i++) text = await fetch(`http://127.0.0.1:${local}/`).then((r) => r.text(), () => '');
      assert.match(text, /served-from-sandbox/);
      await d.client.remove(sb.id, { force: true });
      await assert.rejects(fetch(`http://127.0.0.1:${local}/`), 'the forward is gone with the sandbox');
    });

    test('runtime rule changes: allow-list add and delete apply to the running sandbox', async () => {
      assert.notEqual((await curl(allow, 'https://other.test/')).code, 0);
      const post = (body: unknown) => fetch(`${d.url}/v1/sandboxes/${allow.id}/network/allow-list`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const bad = await post({ add: ['not a host!'] });
      assert.equal(bad.status, 400);
      assert.equal((await post({ add: ['other.test'] })).status, 200);
      assert.equal((await curl(allow, 'https://other.test/')).code, 0, 'allowed after add');
      assert.equal((await post({ delete: ['other.test'] })).status, 200);
      assert.notEqual((await curl(allow, 'https://other.test/')).code, 0, 'blocked again after delete');
    });

    test('after', async () => {
      await d.client.remove(allow.id, { force: true });
    });
  });
}

test('the traffic above is counted in /metrics: egress requests by verdict, bytes, DNS answers', async () => {
  const { parseProm, value } = await import('./helpers/prom-text.js');
  const s = parseProm(await (await fetch(`${d.url}/metrics`)).text());
  assert.ok(value(s, 'cordon_egress_requests_total', { verdict: 'allowed' }) > 0, 'allowed requests are counted');
  assert.ok(value(s, 'cordon_egress_requests_total', { verdict: 'blocked' }) > 0, 'blocked requests are counted');
  assert.ok(value(s, 'cordon_egress_bytes_total', { direction: 'response' }) > 0);
  assert.ok(value(s, 'cordon_dns_answers_total', { outcome: 'answered' }) > 0, 'answered lookups are counted');
  assert.ok(value(s, 'cordon_dns_answers_total', { outcome: 'refused' }) > 0, 'lookups refused by policy are counted');
});
