// The official `e2b` SDK and E2B's network options against cordon, on every runtime: the default
// (internet access → open egress), allowInternetAccess: false, network.allowOut/denyOut, updateNetwork
// at runtime, and a server inside the sandbox reached by E2b-Sandbox-Port / getHost(port), with the
// 502 JSON when nothing listens. Egress goes only to a fake internet in the test's own namespace.
// A second daemon without --egress-interface keeps E2B's default working: no network, no error.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { Sandbox } from 'e2b';
import { HostNet } from '../src/net/host-net.js';
import { until } from './helpers/assert.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, type FakeInternet } from './helpers/net-fake-internet.js';

const SLOT = 10;
const ALL = '0.0.0.0/0';
let d: TestDaemon;
let bare: TestDaemon;
let fi: FakeInternet;
let o: { apiKey: string; apiUrl: string; sandboxUrl: string; domain: string };

before(async () => {
  fi = await startFakeInternet(SLOT);
  // E2B's create names no runtime: one daemon per runtime would double the setup; the default runtime
  // is switched per describe through a second daemon only when more than one runtime is tested.
  d = await startDaemon('e2b-network', { args: [...fi.daemonArgs(SLOT), '--runtime', RUNTIMES[0]] });
  o = { apiKey: 'e2b_dummy', apiUrl: d.url, sandboxUrl: d.url, domain: 'cordon.invalid' };
});
after(async () => {
  for (const s of await Sandbox.list({ ...o, query: { state: ['running', 'paused'] } }).nextItems().catch(() => [])) await Sandbox.kill(s.sandboxId, o).catch(() => {});
  await d?.cleanup();
  await bare?.cleanup();
  await new HostNet({ slot: SLOT }).cleanup();
  await fi?.close();
});

const curl = async (sb: Sandbox, args: string) => {
  const r = await sb.commands.run(`curl -sS --max-time 8 ${args}`).catch((e: { exitCode?: number; stdout?: string }) => ({ exitCode: e.exitCode ?? -1, stdout: e.stdout ?? '' }));
  return { code: r.exitCode, out: r.stdout.trim() };
};

/** A plain HTTP request to the daemon carrying E2B's routing (Host from getHost, or the headers). */
function viaDaemon(headers: Record<string, string>, path = '/'): Promise<{ status: number; body: string }> {
  const u = new URL(d.url);
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

for (const runtime of RUNTIMES) {
  describe(`e2b network on ${runtime}`, () => {
    before(async () => {
      if (runtime === RUNTIMES[0]) return;
      await d.cleanup();
      d = await startDaemon(`e2b-network-${runtime}`, { args: [...fi.daemonArgs(SLOT), '--runtime', runtime] });
      o = { ...o, apiUrl: d.url, sandboxUrl: d.url };
    });

    test('default: internet access (open egress, private ranges blocked); a sandbox port through getHost and E2b-Sandbox-Port; 502 JSON when closed', async () => {
      const sb = await Sandbox.create({ ...o, timeoutMs: 120_000 });
      try {
        const info = await sb.getInfo();
        assert.equal(info.allowInternetAccess, true);
        assert.equal((await curl(sb, 'https://other.test/')).code, 0, 'open egress reaches a public host');
        assert.notEqual((await curl(sb, `-o /dev/null -w '%{http_code}' http://private.test/`)).out, '200');

        await sb.commands.run('mkdir -p /tmp/srv && echo hello-from-port-8000 > /tmp/srv/index.html');
        await sb.commands.run('cd /tmp/srv && python3 -m http.server 8000', { background: true });
        const host = sb.getHost(8000);
        assert.match(host, new RegExp(`^8000-${sb.sandboxId}\\.`));
        let byHost = { status: 0, body: '' };
        await until('the server in the sandbox answers through getHost(8000)', async () => (byHost = await viaDaemon({ host }, '/index.html')).status === 200);
        assert.match(byHost.body, /hello-from-port-8000/);
        const byHeaders = await viaDaemon({ 'E2b-Sandbox-Id': sb.sandboxId, 'E2b-Sandbox-Port': '8000' }, '/index.html');
        assert.equal(byHeaders.status, 200);
        assert.match(byHeaders.body, /hello-from-port-8000/);

        const closed = await viaDaemon({ 'E2b-Sandbox-Id': sb.sandboxId, 'E2b-Sandbox-Port': '8001' });
        assert.equal(closed.status, 502);
        const err = JSON.parse(closed.body) as { code: number; message: string; port: number };
        assert.equal(err.code, 502);
        assert.equal(err.port, 8001);
        assert.match(err.message, /not open/);
      } finally {
        await sb.kill();
      }
    });

    test('allowInternetAccess: false cuts egress; allowOut with denyOut all is an allowlist; updateNetwork changes it at runtime', async () => {
      const off = await Sandbox.create({ ...o, timeoutMs: 120_000, allowInternetAccess: false });
      const list = await Sandbox.create({ ...o, timeoutMs: 120_000, network: { allowOut: ['api.test'], denyOut: [ALL] } });
      try {
        assert.equal((await off.getInfo()).allowInternetAccess, false);
        assert.notEqual((await curl(off, 'https://api.test/')).code, 0, 'no internet access');

        const info = await list.getInfo();
        assert.deepEqual(info.network?.allowOut, ['api.test']);
        assert.equal(JSON.parse((await curl(list, 'https://api.test/x')).out).url, '/x');
        assert.notEqual((await curl(list, 'https://other.test/')).code, 0, 'other.test is not in allowOut');

        await list.updateNetwork({ allowOut: ['api.test', 'other.test'], denyOut: [ALL] });
        assert.equal((await curl(list, 'https://other.test/')).code, 0, 'allowed after updateNetwork');
        assert.deepEqual((await list.getInfo()).network?.allowOut, ['api.test', 'other.test']);
        await list.updateNetwork({ allowInternetAccess: false });
        assert.notEqual((await curl(list, 'https://api.test/')).code, 0, 'cut off after allowInternetAccess: false');

        await off.updateNetwork({ allowOut: ['api.test'], denyOut: [ALL] });
        assert.equal((await curl(off, 'https://api.test/')).code, 0, 'a sandbox created without internet access can be opened later');
        await assert.rejects(list.updateNetwork({ allowOut: ['not a host!'] }), /allowOut/);
      } finally {
        await off.kill();
        await list.kill();
      }
    });
  });
}

describe('e2b on a daemon without an egress interface', () => {
  test('the default create works and has no network; explicit allowOut is refused with a clear error', async () => {
    bare = await startDaemon('e2b-network-bare');
    const ob = { ...o, apiUrl: bare.url, sandboxUrl: bare.url };
    const sb = await Sandbox.create({ ...ob, timeoutMs: 60_000 });
    try {
      assert.equal((await sb.commands.run('echo up')).stdout, 'up\n');
      assert.equal((await sb.getInfo()).allowInternetAccess, false);
      assert.notEqual((await curl(sb, `http://${fi.api}/`)).code, 0);
    } finally {
      await sb.kill();
    }
    await assert.rejects(Sandbox.create({ ...ob, network: { allowOut: ['api.test'] } }), /egress interface/);
    assert.equal((await Sandbox.list({ ...ob }).nextItems()).length, 0, 'the refused create left no sandbox');
  });
});
