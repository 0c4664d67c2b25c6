// Sandbox ports through E2B's routing on a daemon with --domain: the traffic access token of a sandbox
// created with allowPublicTraffic: false (E2B's 403 without it), maskRequestHost, and the SDK over TLS
// with a real reverse proxy (Debian's nginx) in front, reaching envd and getHost(port) by
// "PORT-ID.DOMAIN" names. Egress goes only to a fake internet in the test's own namespace.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Sandbox } from 'e2b';
import { until } from './helpers/assert.js';
import { REPO, RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, tearDownNetSuite, type FakeInternet } from './helpers/net-fake-internet.js';
import { startTlsFront, type TlsFront } from './helpers/tls-front.js';

const SLOT = 23;
const KEY = 'e2b_traffic_key';
const DOMAIN = 'cordon.test';
let d: TestDaemon | undefined;
let fi: FakeInternet | undefined;
let front: TlsFront | undefined;
let o: { apiKey: string; apiUrl: string; sandboxUrl: string; domain: string };

before(async () => {
  fi = await startFakeInternet(SLOT);
  d = await startDaemon('e2b-traffic', { apiKey: KEY, args: [...fi.daemonArgs(SLOT), '--runtime', RUNTIMES[0], '--domain', DOMAIN] });
  o = { apiKey: KEY, apiUrl: d.url, sandboxUrl: d.url, domain: DOMAIN };
});
after(async () => {
  await front?.close();
  await tearDownNetSuite(d, SLOT, fi);
});

/** A plain request to the daemon carrying E2B's routing headers. */
function viaDaemon(headers: Record<string, string>, path = '/'): Promise<{ status: number; body: string }> {
  const u = new URL(d!.url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path, headers }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A server in the sandbox on port 8000 that answers with the request headers it received. */
const ECHO_SERVER = `
import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header('content-type', 'application/json')
        self.send_header('content-length', str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.HTTPServer(('0.0.0.0', 8000), H).serve_forever()
`;

async function startEcho(sb: Sandbox): Promise<void> {
  await sb.files.write('/tmp/echo.py', ECHO_SERVER);
  await sb.commands.run('python3 /tmp/echo.py', { background: true });
}

describe('e2b traffic access token and host mask', () => {
  test('without public traffic a sandbox port needs e2b-traffic-access-token (403 otherwise); envd keeps X-Access-Token; the Host is masked', async () => {
    const closed = await Sandbox.create({ ...o, timeoutMs: 120_000, network: { allowPublicTraffic: false, maskRequestHost: 'masked.internal:${PORT}' } });
    const open = await Sandbox.create({ ...o, timeoutMs: 120_000 });
    try {
      const token = closed.trafficAccessToken!;
      assert.equal(typeof token, 'string');
      assert.equal(open.trafficAccessToken, undefined, 'public sandboxes get no traffic token');
      await startEcho(closed);
      await startEcho(open);
      const port = (sb: Sandbox, extra: Record<string, string> = {}) => viaDaemon({ 'E2b-Sandbox-Id': sb.sandboxId, 'E2b-Sandbox-Port': '8000', ...extra });

      await until('the open sandbox server answers', async () => (await port(open)).status === 200);
      const missing = await port(closed);
      assert.equal(missing.status, 403);
      assert.deepEqual(JSON.parse(missing.body), {
        sandboxId: closed.sandboxId,
        message: "Sandbox is secured with traffic access token. Token header 'e2b-traffic-access-token' is missing",
        code: 403,
      });
      const wrong = await port(closed, { 'e2b-traffic-access-token': 'nope' });
      assert.equal(wrong.status, 403);
      assert.match(JSON.parse(wrong.body).message, /Provided token in header 'e2b-traffic-access-token' is invalid/);
      // The token belongs to its sandbox: it opens nothing else.
      assert.equal((await viaDaemon({ host: `8000-${closed.sandboxId}.${DOMAIN}`, 'e2b-traffic-access-token': open.sandboxId })).status, 403);

      let ok = { status: 0, body: '' };
      await until('the closed sandbox answers with its token', async () => (ok = await port(closed, { 'e2b-traffic-access-token': token })).status === 200);
      const seen = JSON.parse(ok.body) as Record<string, string>;
      assert.equal(seen.host, 'masked.internal:8000', 'maskRequestHost replaces the Host header, ${PORT} filled in');
      assert.equal(seen['e2b-traffic-access-token'], undefined, 'the token is not passed on to the sandbox');
      const byHost = await viaDaemon({ host: `8000-${closed.sandboxId}.${DOMAIN}`, 'e2b-traffic-access-token': token });
      assert.equal(byHost.status, 200, 'PORT-ID.DOMAIN routing takes the token too');

      assert.equal((await closed.commands.run('echo envd')).stdout, 'envd\n', 'envd is not behind the traffic token');
    } finally {
      await closed.kill();
      await open.kill();
    }
  });
});

describe('e2b behind a TLS reverse proxy', () => {
  test('the SDK learns the domain from create: https to api.DOMAIN and 49983-ID.DOMAIN, getHost(port) serves the sandbox port', async () => {
    front = await startTlsFront(d!.url, DOMAIN);
    const child = spawn(process.execPath, [join(REPO, 'dist', 'test', 'helpers', 'e2b-tls-client.js'), JSON.stringify({ apiKey: KEY, domain: DOMAIN, proxy: front.connectProxy })], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: front.caFile, E2B_API_URL: '', E2B_SANDBOX_URL: '', E2B_DOMAIN: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    const killer = setTimeout(() => child.kill('SIGKILL'), 180_000);
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    clearTimeout(killer);
    assert.equal(code, 0, stderr);
    const out = JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, string>;
    assert.equal(out.sandboxDomain, DOMAIN);
    assert.equal(out.echo, 'over-tls\n');
    assert.equal(out.host, `8000-${out.sandboxId}.${DOMAIN}`);
    assert.equal(out.page, 'hello through the TLS front');
  });
});
