// Network hardening end to end (network slot 20), on the first runtime: secrets take daemon variables
// only when the operator allowed them and never show up in responses, events or the log; add-host
// only resolves; the upstream resolver ignores spoofed replies, follows TC to TCP and refreshes
// pins on TTL expiry; leaf certificates are made without forking openssl; the port proxy keeps
// credentials out of the sandbox; the data directory, database and CA key are private.
// Egress goes only to the test's fake internet.
import assert from 'node:assert/strict';
import http from 'node:http';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { sleep, until } from './helpers/assert.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, tearDownNetSuite, type FakeInternet } from './helpers/net-fake-internet.js';

const SLOT = 20;
const KEY = 'hardening-api-key-91d2';
const DAEMON_VALUE = 'daemon-env-value-3f9a';
const PRIVATE_VALUE = 'daemon-private-77c1';
const LITERAL = 'literal-secret-value-8d2e';
const RAW = 'raw-secret-value-5c1e';
const runtime = RUNTIMES[0];
let d: TestDaemon;
let fi: FakeInternet;
let wrapDir: string;

before(async () => {
  fi = await startFakeInternet(SLOT);
  // An openssl on the daemon's PATH that records each call: leaf certificates must not need one.
  wrapDir = mkdtempSync(join(tmpdir(), 'cordon-openssl-'));
  writeFileSync(join(wrapDir, 'openssl'), `#!/bin/sh\necho "$*" >> ${wrapDir}/calls\nexec /usr/bin/openssl "$@"\n`);
  chmodSync(join(wrapDir, 'openssl'), 0o755);
  d = await startDaemon('net-hardening', {
    apiKey: KEY,
    args: [...fi.daemonArgs(SLOT), '--runtime', runtime, '--secret-env', 'SANDBOX_TOKEN'],
    env: { SANDBOX_TOKEN: DAEMON_VALUE, OTHER_DAEMON_VAR: PRIVATE_VALUE, PATH: `${wrapDir}:${process.env.PATH}` },
  });
});
after(async () => {
  await tearDownNetSuite(d, SLOT, fi);
  rmSync(wrapDir, { recursive: true, force: true });
});

const api = (path: string, init: RequestInit = {}) =>
  fetch(`${d.url}${path}`, { ...init, headers: { authorization: `Bearer ${KEY}`, 'x-api-key': KEY, 'content-type': 'application/json', ...(init.headers as Record<string, string>) } });
const create = (body: unknown) => api('/v1/sandboxes', { method: 'POST', body: JSON.stringify({ runtime, ...(body as object) }) });
const sh = async (sb: Sandbox, script: string) => {
  const r = await sb.exec(['sh', '-c', script], { timeout: 60 });
  return { code: r.exit_code, out: r.stdout.trim(), err: r.stderr.trim() };
};
const curl = (sb: Sandbox, args: string) => sh(sb, `curl -sS --max-time 8 ${args}`);
const mode = (p: string) => statSync(p).mode & 0o777;
const pyDns = (server: string, name: string) =>
  `python3 -c "import socket,struct;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(4);q=struct.pack('>HHHHHH',7,256,1,0,0,0)+b''.join(bytes([len(p)])+p.encode() for p in '${name}'.split('.'))+b'\\0\\0\\1\\0\\1';s.sendto(q,('${server}',53));r=s.recv(512);print('rcode',r[3]&15,'answers',struct.unpack('>H',r[6:8])[0])"`;

describe(`network hardening on ${runtime}`, () => {
  test('the data directory is made 0700 even when it existed wider; the database is 0600', async () => {
    assert.equal(mode(d.dataDir), 0o700);
    assert.match(d.log(), /had mode 0755; set it to 0700/);
    assert.equal(mode(join(d.dataDir, 'cordon.db')), 0o600);
  });

  test('NAME@hosts: a daemon variable that is not allowlisted is refused (400 naming --secret-env); bad entries are not echoed', async () => {
    for (const name of ['OTHER_DAEMON_VAR', 'PATH']) {
      const r = await create({ network: { allow_hosts: ['api.test'], secrets: [`${name}@api.test`] } });
      const text = await r.text();
      assert.equal(r.status, 400, text);
      assert.match(text, new RegExp(`--secret-env ${name}`));
      assert.doesNotMatch(text, new RegExp(PRIVATE_VALUE));
    }
    const long = `X=${'v'.repeat(16400)}@api.test`;
    for (const entry of [RAW, `${RAW}@`, `bad name=${RAW}@api.test`, `T=${RAW}@not a host`, 'ab', long]) {
      const r = await create({ network: { allow_hosts: ['api.test'], secrets: [entry] } });
      const text = await r.text();
      assert.equal(r.status, 400, text);
      assert.match(text, /secrets/);
      assert.doesNotMatch(text, new RegExp(`${RAW}|vvvvvvvvvvvvvvvv`), `the entry is not repeated: ${text.slice(0, 300)}`);
    }
    assert.deepEqual(await (await api('/v1/sandboxes')).json(), [], 'refused creates left nothing behind');
  });

  test('secrets from the request and from --secret-env reach only the upstream; no response, event or log line carries a value', async () => {
    const sb = await d.client.create({ runtime, network: { allow_hosts: ['api.test', 'other.test'], secrets: ['SANDBOX_TOKEN@api.test', `LITERAL=${LITERAL}@api.test`] } });
    try {
      assert.match((await sh(sb, 'echo $SANDBOX_TOKEN $LITERAL')).out, /^CORDON_SECRET_SANDBOX_TOKEN_\w+ CORDON_SECRET_LITERAL_\w+$/);
      const ok = await curl(sb, `-H "X-A: $SANDBOX_TOKEN" -H "X-B: $LITERAL" https://api.test/s`);
      assert.equal(ok.code, 0, ok.err);
      const echo = JSON.parse(ok.out) as { headers: Record<string, string> };
      assert.equal(echo.headers['x-a'], DAEMON_VALUE);
      assert.equal(echo.headers['x-b'], LITERAL);
      assert.match((await curl(sb, `-H "X-A: $SANDBOX_TOKEN" https://other.test/`)).out, /ErrSecretLeak/);

      const seen: string[] = [JSON.stringify(sb.info)];
      for (const path of [`/v1/sandboxes/${sb.id}`, '/v1/sandboxes', `/v1/sandboxes/${sb.id}/network`, `/v1/sandboxes/${sb.id}/events`, `/sandboxes/${sb.id}`, '/sandboxes', '/v2/sandboxes']) {
        const r = await api(path);
        assert.equal(r.status, 200, path);
        seen.push(await r.text());
      }
      const events = JSON.parse(seen[4]) as { type: string; data?: Record<string, unknown> }[];
      assert.ok(events.some((e) => e.type === 'network' && e.data?.host === 'api.test' && e.data?.status === 200), 'the request is in the events');
      assert.ok(events.some((e) => e.data?.secret_leak === 'SANDBOX_TOKEN'), 'the leak attempt is in the events');
      seen.push(d.log());
      for (const text of seen) {
        assert.doesNotMatch(text, new RegExp(`${DAEMON_VALUE}|${LITERAL}|${PRIVATE_VALUE}`), text.slice(0, 300));
      }
    } finally {
      await sb.remove({ force: true });
    }
  });

  test('--add-host only resolves: api.test answers but cannot be reached until an allow entry names it', async () => {
    const sb = await d.client.create({ runtime, network: { allow_hosts: ['other.test'], add_hosts: [{ host: 'api.test', ip: fi.api }] } });
    try {
      assert.match((await sh(sb, 'getent hosts api.test')).out, new RegExp(`^${fi.api.replace(/\./g, '\\.')}\\s+api\\.test`));
      assert.match((await sh(sb, pyDns(fi.api, 'api.test'))).out, /rcode 0 answers 1/, "the daemon's resolver answers it too");
      assert.equal((await curl(sb, `-o /dev/null -w '%{http_code}' https://api.test/`)).out, '403');
      assert.equal((await curl(sb, `-o /dev/null -w '%{http_code}' http://api.test/`)).out, '403');
      assert.equal((await curl(sb, 'https://other.test/')).code, 0, 'the allowed host works');
      const r = await api(`/v1/sandboxes/${sb.id}/network/allow-list`, { method: 'POST', body: JSON.stringify({ add: ['api.test'] }) });
      assert.equal(r.status, 200);
      const ok = await curl(sb, 'https://api.test/x');
      assert.equal(ok.code, 0, ok.err);
      assert.equal(JSON.parse(ok.out).local, fi.api);
    } finally {
      await sb.remove({ force: true });
    }
  });

  test('upstream DNS: replies from another address or port, with a wrong id or question are ignored; TC is asked over TCP; pins refresh on TTL expiry', async () => {
    const sb = await d.client.create({ runtime, network: { allow_hosts: ['*.test'] } });
    const local = async (name: string) => {
      const r = await curl(sb, `http://${name}/`);
      assert.equal(r.code, 0, `${name}: ${r.err}`);
      return (JSON.parse(r.out) as { local: string }).local;
    };
    try {
      for (const name of ['spoof-source.test', 'spoof-port.test', 'spoof-id.test', 'spoof-question.test', 'truncated.test']) {
        assert.equal(await local(name), fi.api, `${name}: the real answer is pinned, not the lure`);
      }
      assert.equal(await local('ttl.test'), fi.api);
      // The fake DNS answers ttl.test (TTL 1 s) with another address from its fourth query on.
      let now = '';
      await until('the pin of ttl.test is refreshed to its new address', async () => {
        now = await local('ttl.test');
        if (now !== fi.other) await sleep(1000);
        return now === fi.other;
      }, 90_000);
    } finally {
      await sb.remove({ force: true });
    }
  });

  test('leaf certificates for many hosts are made in process: no openssl is run', async () => {
    const sb = await d.client.create({ runtime, network: { allow_hosts: ['*.test'] } });
    try {
      const names = Array.from({ length: 12 }, (_, i) => `h${i}.test`);
      const r = await sh(sb, names.map((n) => `curl -sS --max-time 8 --resolve ${n}:443:${fi.api} -o /dev/null -w '%{http_code} ' https://${n}/`).join('; '));
      // 403: the TLS handshake with a cordon-signed certificate worked; the proxy then finds no address.
      assert.equal(r.out, names.map(() => '403').join(' '), r.err);
      assert.equal(existsSync(join(wrapDir, 'calls')) ? readFileSync(join(wrapDir, 'calls'), 'utf8') : '', '', 'openssl was run by the daemon');
    } finally {
      await sb.remove({ force: true });
    }
  });

  test('the port proxy (E2b-Sandbox-Port) keeps access tokens and the API key out of the sandbox', async () => {
    const sb = await d.client.create({ runtime, network: { allow_hosts: ['api.test'] } });
    try {
      await sb.files.write('/tmp/echo.py', [
        'import http.server, json',
        'class H(http.server.BaseHTTPRequestHandler):',
        '    def do_GET(self):',
        '        b = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()',
        '        self.send_response(200); self.end_headers(); self.wfile.write(b)',
        "http.server.HTTPServer(('0.0.0.0', 8000), H).serve_forever()",
      ].join('\n'));
      assert.equal((await sh(sb, '(nohup python3 /tmp/echo.py >/dev/null 2>&1 &); true')).code, 0);
      const send = (headers: Record<string, string>) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const u = new URL(d.url);
          const req = http.request({ host: u.hostname, port: u.port, path: '/', headers }, (res) => {
            let body = '';
            res.on('data', (c) => (body += c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
          });
          req.on('error', reject);
          req.end();
        });
      const headers = {
        'E2b-Sandbox-Id': sb.id, 'E2b-Sandbox-Port': '8000', 'X-Access-Token': 'envd-token-1', 'E2b-Traffic-Access-Token': 'traffic-token-2',
        Authorization: `Bearer ${KEY}`, 'X-API-Key': KEY, 'X-Cordon-Trace': 'trace-3', 'X-Keep': 'kept',
      };
      let r = { status: 0, body: '' };
      await until('the echo server in the sandbox answers through the port proxy', async () => (r = await send(headers)).status === 200, 60_000);
      const got = JSON.parse(r.body) as Record<string, string>;
      assert.equal(got['x-keep'], 'kept');
      for (const h of ['e2b-sandbox-id', 'e2b-sandbox-port', 'x-access-token', 'e2b-traffic-access-token', 'authorization', 'x-api-key', 'x-cordon-trace']) assert.equal(got[h], undefined, `${h} reached the sandbox`);
      assert.doesNotMatch(r.body, new RegExp(KEY));
      // A sandbox made through the native API needs the daemon key on its ports; the app's own Authorization still passes.
      const own = JSON.parse((await send({ 'E2b-Sandbox-Id': sb.id, 'E2b-Sandbox-Port': '8000', 'X-API-Key': KEY, Authorization: 'Bearer app-token' })).body) as Record<string, string>;
      assert.equal(own.authorization, 'Bearer app-token', "the app's own credentials still pass");
      assert.equal(own['x-api-key'], undefined);
    } finally {
      await sb.remove({ force: true });
    }
  });

  test('after networked sandboxes: CA key 0600 in a 0700 directory; database WAL and shm 0600', async () => {
    assert.equal(mode(join(d.dataDir, 'net-ca')), 0o700);
    assert.equal(mode(join(d.dataDir, 'net-ca', 'ca.key')), 0o600);
    for (const f of ['cordon.db', 'cordon.db-wal', 'cordon.db-shm']) assert.equal(mode(join(d.dataDir, f)), 0o600, f);
    assert.equal(mode(d.dataDir), 0o700);
  });
});
