// Networked sandboxes across a daemon crash (kill -9) and restart, on every runtime: links, policy
// (including rules changed at runtime), resolver, proxy and port forwards come back; the network of
// removed and dead sandboxes and planted leftovers are gone after start-up, and nothing of the slot
// stays on the host once the last sandbox is removed and the daemon stops.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HostNet } from '../src/net/host-net.js';
import type { Sandbox } from '../src/sdk/index.js';
import { run } from '../src/util/proc.js';
import { until } from './helpers/assert.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, type FakeInternet } from './helpers/net-fake-internet.js';

const SLOT = 8;
const LEAK_NS = `cordon${SLOT}-leaked000000`;
const LEAK_IF = `cd${SLOT}h16000`;
let d: TestDaemon;
let fi: FakeInternet;

before(async () => {
  fi = await startFakeInternet(SLOT);
  d = await startDaemon('net-restart', { args: fi.daemonArgs(SLOT) });
});
after(async () => {
  if (d?.proc.exitCode === null) for (const s of (await d.client.list().catch(() => [])) ?? []) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d?.cleanup();
  // Whatever happened above, nothing of this slot (or the planted leaks) stays on the host.
  await run('ip', ['netns', 'del', LEAK_NS]);
  await run('ip', ['link', 'del', LEAK_IF]);
  await new HostNet({ slot: SLOT }).cleanup();
  await fi?.close();
});

const sh = async (sb: Sandbox, script: string) => {
  const r = await sb.exec(['sh', '-c', script], { timeout: 30 });
  return { code: r.exit_code, out: r.stdout.trim(), err: r.stderr.trim() };
};
const curl = (sb: Sandbox, args: string) => sh(sb, `curl -sS --max-time 8 ${args}`);

async function slotState(): Promise<{ links: string[]; netns: string[]; table: boolean }> {
  const h = new HostNet({ slot: SLOT });
  return { ...(await h.kernelLinks()), table: await h.hasTable() };
}

const linkOf = (id: string): { hostIf: string; netns: string } => JSON.parse(readFileSync(join(d.dataDir, 'net', 'links', `${id}.json`), 'utf8'));

async function fetchText(url: string): Promise<string> {
  let text = '';
  for (let i = 0; i < 50 && !text; i++) {
    text = await fetch(url).then((r) => r.text(), () => '');
    if (!text) await new Promise((r) => setTimeout(r, 100));
  }
  return text;
}

describe('network across a daemon kill -9 and restart', () => {
  const alive: { sb: Sandbox; local: number }[] = [];
  let victim: Sandbox;

  test('networked sandboxes on every runtime, one with a rule added at runtime', async () => {
    for (const runtime of RUNTIMES) {
      const local = 20000 + Math.floor(Math.random() * 20000);
      const sb = await d.client.create({ runtime, network: { allow_hosts: ['api.test'], ports: [`${local}:8000`] } });
      assert.equal((await curl(sb, 'https://api.test/before')).code, 0);
      assert.notEqual((await curl(sb, 'https://other.test/')).code, 0, 'other.test is not allowed yet');
      const r = await fetch(`${d.url}/v1/sandboxes/${sb.id}/network/allow-list`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ add: ['other.test'] }) });
      assert.equal(r.status, 200);
      await sh(sb, 'mkdir -p /srv && echo served-after-restart > /srv/index.html && (cd /srv && nohup python3 -m http.server 8000 >/dev/null 2>&1 &) ; sleep 1');
      assert.match(await fetchText(`http://127.0.0.1:${local}/`), /served-after-restart/);
      alive.push({ sb, local });
    }
  });

  test('a removed networked sandbox leaves no link, namespace or state behind', async () => {
    const sb = await d.client.create({ runtime: RUNTIMES[0], network: { allow_hosts: ['api.test'] } });
    const link = linkOf(sb.id);
    const before = await slotState();
    assert.ok(before.links.includes(link.hostIf) && before.netns.includes(link.netns), 'the link exists while it runs');
    await sb.remove({ force: true });
    const now = await slotState();
    assert.equal(now.links.includes(link.hostIf), false);
    assert.equal(now.netns.includes(link.netns), false);
    assert.equal(existsSync(join(d.dataDir, 'net', 'links', `${sb.id}.json`)), false);
  });

  test('after kill -9 and restart: allowed host, runtime rule and port forward work; dead and leaked links are gone', async () => {
    victim = await d.client.create({ runtime: RUNTIMES.at(-1), network: { allow_hosts: ['api.test'] } });
    const victimLink = linkOf(victim.id);
    await d.stop('SIGKILL');

    const initPid = Number(readFileSync(join(d.dataDir, 'sandboxes', victim.id, 'bundle', 'init.pid'), 'utf8'));
    process.kill(initPid, 'SIGKILL');
    await until('the victim init is gone', () => !existsSync(`/proc/${initPid}/status`) || /State:\s+Z/.test(readFileSync(`/proc/${initPid}/status`, 'utf8')));
    // Leftovers of some earlier crash, and a crun sandbox whose host end of the link vanished.
    await run('ip', ['netns', 'add', LEAK_NS]);
    await run('ip', ['link', 'add', LEAK_IF, 'type', 'veth', 'peer', 'name', `cd${SLOT}x16000`]);
    const rebuilt = alive.find((a) => a.sb.info.runtime !== 'runsc');
    if (rebuilt) assert.equal((await run('ip', ['link', 'del', linkOf(rebuilt.sb.id).hostIf])).code, 0);
    const down = await slotState();
    assert.ok(down.links.includes(LEAK_IF) && down.netns.includes(LEAK_NS) && down.table, 'planted leftovers exist while the daemon is down');

    await d.restart();

    for (const { sb, local } of alive) {
      const rt = sb.info.runtime;
      assert.equal((await sb.refresh()).state, 'running', rt);
      const ok = await curl(sb, 'https://api.test/after');
      assert.equal(ok.code, 0, `${rt}: allowed host after restart: ${ok.err}`);
      assert.equal(JSON.parse(ok.out).url, '/after');
      assert.equal((await curl(sb, 'https://other.test/')).code, 0, `${rt}: the rule added at runtime survives`);
      assert.notEqual((await curl(sb, `-o /dev/null -w '%{http_code}' http://private.test/`)).out, '200', `${rt}: still not open egress`);
      assert.match(await fetchText(`http://127.0.0.1:${local}/`), /served-after-restart/, `${rt}: port forward after restart`);
    }
    assert.equal((await victim.refresh()).state, 'error');
    const now = await slotState();
    assert.equal(now.links.includes(victimLink.hostIf), false, 'the dead sandbox link is gone');
    assert.equal(now.netns.includes(victimLink.netns), false, 'the dead sandbox namespace is gone');
    assert.equal(now.links.includes(LEAK_IF), false, 'a leaked link is swept at start-up');
    assert.equal(now.netns.includes(LEAK_NS), false, 'a leaked namespace is swept at start-up');
    assert.equal(now.links.length, alive.length, 'exactly the running sandboxes keep a link');
    assert.equal(await fi.outsideHits(), 0);
  });

  test('after the last sandbox is removed and the daemon stops, nothing of the slot stays', async () => {
    await victim.remove();
    for (const { sb } of alive) await sb.remove({ force: true });
    const empty = await slotState();
    assert.deepEqual([empty.links, empty.netns], [[], []]);
    await d.stop();
    assert.deepEqual(await slotState(), { links: [], netns: [], table: false });
  });
});
