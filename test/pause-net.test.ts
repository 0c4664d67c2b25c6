// Pause to disk of networked runsc sandboxes (egress only to the test's fake internet). A pause gives
// the namespace back and a resume makes a new one under the same policy: allowed hosts answer, others
// are refused, port forwards serve. A sandbox holding a TCP connection cannot be checkpointed: the
// pause is refused (409, naming the connection) and the sandbox runs on. E2B autoResume: traffic for a
// port of a paused sandbox resumes it and is served.
// Run under the net lock: flock /tmp/cordon-net-tests.lock npm test.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Sandbox as E2bSandbox } from 'e2b';
import type { Sandbox } from '../src/sdk/index.js';
import { rejectsWith, until } from './helpers/assert.js';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, tearDownNetSuite, type FakeInternet } from './helpers/net-fake-internet.js';

const SLOT = 29;
let d: TestDaemon | undefined;
let fi: FakeInternet | undefined;

before(async () => {
  fi = await startFakeInternet(SLOT);
  d = await startDaemon('pause-net', { args: [...fi.daemonArgs(SLOT), '--runtime', 'runsc'] });
});
after(async () => {
  await tearDownNetSuite(d, SLOT, fi);
});

const sh = async (sb: Sandbox, script: string) => {
  const r = await sb.exec(['sh', '-c', script], { timeout: 30 });
  return { code: r.exit_code, out: r.stdout.trim(), err: r.stderr.trim() };
};
const curl = (sb: Sandbox, args: string) => sh(sb, `curl -sS --max-time 8 ${args}`);

async function fetchText(url: string): Promise<string> {
  let text = '';
  for (let i = 0; i < 50 && !text; i++) {
    text = await fetch(url).then((r) => r.text(), () => '');
    if (!text) await new Promise((r) => setTimeout(r, 100));
  }
  return text;
}

describe('pause to disk with a network', () => {
  let sb: Sandbox;
  const local = 20000 + Math.floor(Math.random() * 20000);

  test('after a resume the policy holds in a new namespace and the port forward serves the same server', async () => {
    sb = await d!.client.create({ runtime: 'runsc', network: { allow_hosts: ['api.test'], ports: [`${local}:8000`] } });
    await sh(sb, 'mkdir -p /srv && echo served-after-resume > /srv/index.html');
    // Started through the API (the agent): it survives the checkpoint; nothing has connected yet.
    await sb.startProcess(['python3', '-m', 'http.server', '8000', '--directory', '/srv'], { tag: 'web' });
    await until('the server listens', async () => (await sh(sb, 'cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -c ":1F40 .* 0A"')).out !== '0');
    const serverPid = (await sb.process('web')).pid;

    assert.equal((await sb.pause()).state, 'paused');
    // A rule added while it is paused to disk (no namespace) is stored and applied at the resume.
    const add = await fetch(`${d!.url}/v1/sandboxes/${sb.id}/network/allow-list`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ add: ['ttl.test'] }) });
    assert.equal(add.status, 200, await add.text());
    assert.equal((await sb.resume()).state, 'running');

    assert.equal((await sb.process('web')).pid, serverPid, 'the same server process');
    const ok = await curl(sb, 'https://api.test/after-resume');
    assert.equal(ok.code, 0, ok.err);
    assert.notEqual((await curl(sb, 'https://other.test/')).code, 0, 'other.test is still not allowed');
    const added = await curl(sb, 'http://ttl.test/');
    assert.equal(added.code, 0, `the rule added while paused holds: ${added.err}`);
    assert.match(await fetchText(`http://127.0.0.1:${local}/`), /served-after-resume/);
  });

  test('hostile: a sandbox holding a TCP connection: the pause is refused (409) and it runs on', async () => {
    // Hold a connection into the sandbox through its port forward.
    const sock: Socket = connect(local, '127.0.0.1');
    await new Promise<void>((resolve, reject) => sock.once('connect', () => resolve()).once('error', reject));
    sock.write('GET / HTTP/1.1\r\nHost: x\r\n');
    try {
      await rejectsWith(sb.pause(), 'invalid_state', /TCP connections .*close them and retry/);
      assert.equal((await sb.refresh()).state, 'running');
      assert.equal((await sh(sb, 'echo still-here')).out, 'still-here');
      const errs = (await sb.events_()).filter((e) => e.type === 'error' && e.data?.op === 'pause');
      assert.equal(errs.length, 1, 'the failed pause is an event');
      assert.equal((await curl(sb, 'https://api.test/after-refused-pause')).code, 0, 'the network still works');
    } finally {
      sock.destroy();
    }
  });
});

describe('e2b autoResume through port routing', () => {
  test('a request for a port of a paused sandbox resumes it and is served', async () => {
    const o = { apiKey: 'e2b_dummy', apiUrl: d!.url, sandboxUrl: d!.url, domain: 'cordon.invalid' };
    const sb = await E2bSandbox.create({ ...o, timeoutMs: 300_000, lifecycle: { onTimeout: 'pause', autoResume: true } });
    try {
      await sb.files.write('/tmp/www/index.html', 'woken by traffic\n');
      await sb.commands.run('python3 -m http.server 8000 --directory /tmp/www', { background: true });
      await until('the server listens', async () => (await sb.commands.run('cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -c ":1F40 .* 0A" || true')).stdout.trim() !== '0');
      assert.equal(await sb.pause(), true);
      assert.equal((await E2bSandbox.getInfo(sb.sandboxId, o)).state, 'paused');
      const res = await fetch(`${d!.url}/index.html`, { headers: { 'e2b-sandbox-id': sb.sandboxId, 'e2b-sandbox-port': '8000' } });
      assert.equal(res.status, 200);
      assert.equal(await res.text(), 'woken by traffic\n');
      assert.equal((await E2bSandbox.getInfo(sb.sandboxId, o)).state, 'running');
    } finally {
      await sb.kill();
    }
  });
});
