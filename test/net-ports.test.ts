// Ports in on a running sandbox, on every runtime: add a forward to a server inside the sandbox
// (SDK, REST, CLI), fetch through it on 127.0.0.1, list it, refuse bad and conflicting ports, remove
// it (the port is closed, also for a kept-alive connection) and find a runtime-added forward again
// after the sandbox stops and starts. Egress goes only to the test's fake internet.
import assert from 'node:assert/strict';
import { connect, createServer, type Server } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { rejectsWith, sleep } from './helpers/assert.js';
import { cli, freePort, RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, tearDownNetSuite, type FakeInternet } from './helpers/net-fake-internet.js';

const SLOT = 13;
let d: TestDaemon;
let fi: FakeInternet;

before(async () => {
  fi = await startFakeInternet(SLOT);
  d = await startDaemon('net-ports', { args: fi.daemonArgs(SLOT) });
});
after(() => tearDownNetSuite(d, SLOT, fi));

const serve = async (sb: Sandbox, text: string) => {
  const r = await sb.exec(['sh', '-c', `mkdir -p /srv && echo ${text} > /srv/index.html && (cd /srv && nohup python3 -m http.server 8000 >/dev/null 2>&1 &) ; sleep 1`], { timeout: 30 });
  assert.equal(r.exit_code, 0, r.stderr);
};

async function fetchText(url: string): Promise<string> {
  let text = '';
  for (let i = 0; i < 50 && !text; i++) {
    text = await fetch(url).then((r) => r.text(), () => '');
    if (!text) await new Promise((r) => setTimeout(r, 100));
  }
  return text;
}

/** Whether a new TCP connection to 127.0.0.1:port is refused. */
const refused = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(false)));
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });

/** An idle connection through the forward (the server inside waits for a request line). */
async function idleConnection(port: number) {
  const s = connect(port, '127.0.0.1');
  const closed = new Promise<string>((r) => s.once('close', () => r('closed')));
  await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
  return { closed };
}

for (const runtime of RUNTIMES) {
  describe(`port forwards on a running ${runtime} sandbox`, () => {
    let sb: Sandbox;
    let blocker: Server;
    before(async () => {
      sb = await d.client.create({ runtime, network: { allow_hosts: ['api.test'] } });
      await serve(sb, `hello-from-${runtime}`);
      blocker = createServer().listen(0, '127.0.0.1');
    });
    after(async () => {
      blocker?.close();
      await sb?.remove().catch(() => {});
    });

    test('SDK: add LOCAL:REMOTE, fetch on 127.0.0.1, list, remove, the port is closed', async () => {
      const local = await freePort();
      assert.ok(await refused(local), 'nothing listens before the forward');
      const f = await sb.addPort(`${local}:8000`);
      assert.deepEqual(f, { address: '127.0.0.1', local_port: local, remote_port: 8000 });
      assert.match(await fetchText(`http://127.0.0.1:${local}/`), new RegExp(`hello-from-${runtime}`));
      assert.deepEqual(await sb.ports(), [f]);
      assert.deepEqual((await sb.refresh()).network?.ports, [f], 'stored with the spec');

      const idle = await idleConnection(local);
      assert.deepEqual(await sb.removePort(local), f);
      const stillOpen = sleep(10_000).then(() => 'open');
      assert.equal(await Promise.race([idle.closed, stillOpen]), 'closed', 'an open connection through the forward is closed too');
      assert.ok(await refused(local), 'the port is closed after rm');
      assert.deepEqual(await sb.ports(), []);
      await rejectsWith(sb.removePort(local), 'not_found', /no forward on local port/);
      const events = await sb.events_();
      assert.ok(events.some((e) => e.type === 'network-ports' && /added/.test(e.message)));
      assert.ok(events.some((e) => e.type === 'network-ports' && /removed/.test(e.message)));
    });

    test('REST validation: ports 1-65535, LOCAL in use (forwarded or bound on the host) is 409', async () => {
      const post = (body: unknown) => fetch(`${d.url}/v1/sandboxes/${sb.id}/ports`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      assert.equal((await post({ remote: 70000 })).status, 400);
      assert.equal((await post({ local: 0, remote: 8000 })).status, 400);
      assert.equal((await post({ remote: 8000, host: 'localhost!' })).status, 400);
      assert.equal((await post({ remote: 8000, extra: 1 })).status, 400);

      const local = await freePort();
      const ok = await post({ local, remote: 8000 });
      assert.equal(ok.status, 201);
      const dup = await post({ local, remote: 9000 });
      assert.equal(dup.status, 409);
      assert.match(((await dup.json()) as { message: string }).message, new RegExp(`local port ${local} already forwards to port 8000`));

      const busy = (blocker.address() as { port: number }).port;
      const taken = await post({ local: busy, remote: 8000 });
      assert.equal(taken.status, 409);
      assert.match(((await taken.json()) as { message: string }).message, /already in use on the host/);
      assert.deepEqual((await sb.ports()).map((p) => p.local_port), [local], 'a refused forward is not stored');
      assert.equal((await fetch(`${d.url}/v1/sandboxes/${sb.id}/ports/${local}`, { method: 'DELETE' })).status, 200);
      assert.equal((await fetch(`${d.url}/v1/sandboxes/${sb.id}/ports/99999`, { method: 'DELETE' })).status, 400);
    });

    test('CLI: port add / ls / rm (human and --json); bad specs exit 64', async () => {
      const local = await freePort();
      const added = await cli(d, ['port', 'add', sb.id, `${local}:8000`, '--json']);
      assert.equal(added.code, 0, added.stderr);
      assert.deepEqual(JSON.parse(added.stdout), { address: '127.0.0.1', local_port: local, remote_port: 8000 });
      assert.match(await fetchText(`http://127.0.0.1:${local}/`), /hello-from/);
      const ls = await cli(d, ['port', 'ls', sb.id]);
      assert.equal(ls.code, 0, ls.stderr);
      assert.match(ls.stdout, new RegExp(`127\\.0\\.0\\.1:${local}\\s+8000`));
      assert.equal(JSON.parse((await cli(d, ['port', 'ls', sb.id, '--json'])).stdout).length, 1);
      const again = await cli(d, ['port', 'add', sb.id, `${local}:8000`, '--json']);
      assert.equal(again.code, 65, again.stdout);
      assert.match(again.stdout, /already_exists/);
      assert.equal((await cli(d, ['port', 'add', sb.id, 'abc'])).code, 64);
      assert.equal((await cli(d, ['port', 'add', sb.id, '0:8000'])).code, 64);
      const rm = await cli(d, ['port', 'rm', sb.id, String(local), '--json']);
      assert.equal(rm.code, 0, rm.stderr);
      assert.equal(JSON.parse(rm.stdout).local_port, local);
      assert.ok(await refused(local));
    });

    test('a forward added at runtime comes back after the sandbox stops and starts', async () => {
      const local = await freePort();
      await sb.addPort({ local, remote: 8000 });
      await sb.stop();
      assert.ok(await refused(local), 'closed while stopped');
      await sb.start();
      await serve(sb, `again-${runtime}`);
      assert.match(await fetchText(`http://127.0.0.1:${local}/`), new RegExp(`again-${runtime}`));
      await sb.removePort(local);
      assert.ok(await refused(local));
    });

    test('a running sandbox without a network namespace refuses with a clear 409', async () => {
      const plain = await d.client.create({ runtime });
      try {
        await rejectsWith(plain.addPort(8000), 'invalid_state', /without a network namespace/);
        assert.deepEqual(await plain.ports(), []);
      } finally {
        await plain.remove();
      }
    });
  });
}
