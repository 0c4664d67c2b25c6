// Templates with their service running and warm pools: the service answers right after create (runsc
// from the template's memory snapshot, crun by starting it), a ready command that never passes, claims
// with per-request env, labels and network policy, refill, removal refused while a pool uses the
// template, and a daemon restart. Network parts go to a fake internet (its own namespace) only.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, freePort, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, tearDownNetSuite, type FakeInternet } from './helpers/net-fake-internet.js';
import type { TemplateInfo } from '../src/sdk/templates.js';

const SLOT = 17;
let d: TestDaemon;
let fi: FakeInternet;
let work: string;

before(async () => {
  work = mkdtempSync('/var/lib/cordon-test/tmpl-warm-');
  fi = await startFakeInternet(SLOT);
  d = await startDaemon('template-warm', { args: fi.daemonArgs(SLOT) });
});

after(async () => {
  // Pool members are not listed: empty the pools first, so that nothing is left running.
  for (const t of (await d?.client.templates.list().catch(() => [])) ?? []) await d.client.templates.setWarm(t.name, 0).catch(() => {});
  await tearDownNetSuite(d, SLOT, fi);
  rmSync(work, { recursive: true, force: true });
});

function context(name: string, dockerfile: string): string {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'Dockerfile'), dockerfile);
  return dir;
}

/** Wait (on the daemon's own view, no fixed sleep) until the template's pool has `n` ready members. */
async function poolReady(name: string, n: number): Promise<TemplateInfo> {
  for (let i = 0; i < 600; i++) {
    const t = await d.client.templates.get(name);
    if (t.warm.ready === n && t.warm.starting === 0) return t;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the pool of ${name} never reached ${n} ready: ${JSON.stringify((await d.client.templates.get(name)).warm)}`);
}

async function eventTypes(id: string): Promise<string[]> {
  return (await (await d.client.get(id)).events_()).map((e) => e.type);
}

const SERVICE = 'FROM base\nRUN mkdir -p /srv && echo served > /srv/index.html\nWORKDIR /srv\n';
const START = ['--start-cmd', 'python3 -m http.server 8000 --bind 0.0.0.0', '--ready-cmd', 'curl -sf http://127.0.0.1:8000/ > /dev/null'];
const FIRST_REQUEST = ['curl', '-s', '--max-time', '5', 'http://127.0.0.1:8000/index.html'];

describe('templates with a running service, and warm pools', () => {
  it('builds a template whose service runs, snapshotted with it up, and keeps a warm pool', async () => {
    const r = await cli(d, ['template', 'build', 'svc', '--context', context('svc', SERVICE), ...START, '--warm', '1', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const t = await d.client.templates.get('svc');
    assert.ok(t.snapshot, 'runsc checkpoints memory: the template has a memory snapshot');
    assert.equal(t.warm.size, 1);
    // Its snapshot is the template's own: not among the user's snapshots.
    assert.equal((await cli(d, ['snapshot', 'ls', '--json'])).stdout.includes(t.snapshot!), false);
    const pool = await poolReady('svc', 1);
    assert.deepEqual(await d.client.list(), [], 'pool members are not listed as user sandboxes');
    // Ready means its create has returned (the restore's last step records 'created'), not only that it runs.
    assert.ok((await eventTypes(pool.warm.members[0])).includes('created'));
  });

  it('a claim answers on the first request, with the request env, metadata and timeout, and the pool refills', async () => {
    const sbx = await d.client.create({ template: 'svc', env: { GREETING: 'from-claim' }, labels: { owner: 'alice' }, timeout: '120s' });
    try {
      assert.equal((await sbx.exec(FIRST_REQUEST)).stdout, 'served\n', 'the service answers the first request right after create');
      assert.ok((await eventTypes(sbx.id)).includes('pool-claim'));
      // The member ran one warm-up command before it counted as ready; the claimer sees only its own.
      assert.ok((await eventTypes(sbx.id)).includes('pool-ready'));
      const procs = await sbx.processes();
      assert.ok(procs.every((p) => !p.tag?.startsWith('cordon-warm-up') && p.cmd.join(' ') !== 'true'), JSON.stringify(procs));
      assert.equal((await sbx.exec(['sh', '-c', 'echo $GREETING; pwd'])).stdout, 'from-claim\n/srv\n', 'later commands see the request env, in the WORKDIR');
      const info = await sbx.refresh();
      assert.equal(info.labels.owner, 'alice');
      assert.equal(info.labels['cordon.pool'], undefined);
      assert.ok(info.expires_at, 'the request timeout applies');
      assert.deepEqual((await d.client.list()).map((s) => s.id), [sbx.id]);
      const t = await poolReady('svc', 1);
      assert.equal(t.warm.claims, 1);
    } finally {
      await sbx.remove({ force: true });
    }
  });

  it('an empty pool falls back to the memory snapshot (runsc) and to start + ready (crun): the service answers at once', async () => {
    await d.client.templates.setWarm('svc', 0);
    const warm = await d.client.templates.get('svc');
    assert.equal(warm.warm.ready, 0, 'warm 0 empties the pool');
    const restored = await d.client.create({ template: 'svc' });
    const cold = await d.client.create({ template: 'svc', runtime: 'crun' });
    try {
      assert.equal((await restored.exec(FIRST_REQUEST)).stdout, 'served\n');
      assert.match((await restored.events_()).find((e) => e.type === 'created')!.message, /memory snapshot/);
      assert.equal((await cold.exec(FIRST_REQUEST)).stdout, 'served\n');
      assert.ok((await eventTypes(cold.id)).includes('template-cold'), 'crun boots the files and runs the start command');
      // In use by sandboxes: removal refused.
      const rm = await cli(d, ['template', 'rm', 'svc']);
      assert.notEqual(rm.code, 0);
      assert.match(rm.stderr, /used by sandbox/);
    } finally {
      await restored.remove({ force: true });
      await cold.remove({ force: true });
    }
  });

  it('members with a deny-all namespace reach nothing; claims get their own policy, secrets, add-hosts and ports; no-network claims get a member without one', async () => {
    const before = (await d.client.templates.get('svc')).warm.claims;
    await d.client.templates.setWarm('svc', 3, { network: 2 });
    let t = await poolReady('svc', 3);
    assert.equal(t.warm.network, 2);
    assert.equal(t.warm.network_ready, 2);
    const rm = await cli(d, ['template', 'rm', 'svc']);
    assert.notEqual(rm.code, 0);
    assert.match(rm.stderr, /warm pool/);
    // A member waiting in its namespace, acting as an attacker: no name resolves, no address answers.
    const infos = await Promise.all(t.warm.members.map((id) => d.client.get(id)));
    const waiting = infos.find((s) => s.info.network?.mode === 'allowlist')!;
    assert.ok(waiting, 'a networked member is there');
    const probe = await waiting.exec(['sh', '-c', `getent hosts api.test; curl -sS --max-time 5 http://api.test/member; curl -sS --max-time 5 http://${fi.api}/member; curl -sS --max-time 5 -k https://${fi.other}/member; echo done`]);
    assert.doesNotMatch(probe.stdout, /"url"/, `a waiting member reached a host: ${probe.stdout}`);
    assert.match(probe.stdout, /done/);

    const local = await freePort();
    const [a, b, plain] = await Promise.all([
      d.client.create({ template: 'svc', env: { TOKEN: 'claim-a' }, network: { mode: 'allowlist', allow_hosts: ['api.test'], secrets: ['API_KEY=real-key-a@api.test'], ports: [`${local}:8000`] } }),
      d.client.create({ template: 'svc', network: { mode: 'allowlist', allow_hosts: ['other.test', 'svc.internal'], add_hosts: [{ host: 'svc.internal', ip: fi.other }] } }),
      d.client.create({ template: 'svc', env: { TOKEN: 'plain' } }),
    ]);
    try {
      for (const s of [a, b, plain]) {
        const evs = await eventTypes(s.id);
        assert.ok(evs.includes('pool-claim') && !evs.includes('pool-miss'), `${s.id}: ${evs.join(',')}`);
      }
      assert.equal((await a.exec(FIRST_REQUEST)).stdout, 'served\n', 'the service answers the first request');
      // a: api.test with its secret swapped in on the way out, nothing else.
      const got = JSON.parse((await a.exec(['sh', '-c', 'curl -sS --max-time 8 -H "Authorization: Bearer $API_KEY" "http://api.test/claimed?t=$TOKEN"'])).stdout);
      assert.equal(got.url, '/claimed?t=claim-a');
      assert.equal(got.headers.authorization, 'Bearer real-key-a');
      assert.match((await a.exec(['sh', '-c', 'echo $API_KEY'])).stdout, /^CORDON_SECRET_API_KEY_/, 'the sandbox holds the placeholder only');
      assert.notEqual((await a.exec(['curl', '-sS', '--max-time', '8', 'http://other.test/'])).exit_code, 0, 'a: other.test stays blocked');
      const res = await fetch(`http://127.0.0.1:${local}/index.html`);
      assert.equal(await res.text(), 'served\n', 'the request port forward reaches the service');
      // b: its own policy (other.test, and a name from its add-hosts), not a's.
      assert.equal(JSON.parse((await b.exec(['curl', '-sS', '--max-time', '8', 'http://other.test/b'])).stdout).url, '/b');
      assert.match((await b.exec(['cat', '/etc/hosts'])).stdout, new RegExp(`${fi.other.replace(/\./g, '\\.')}\\s+svc\\.internal`));
      assert.equal(JSON.parse((await b.exec(['curl', '-sS', '--max-time', '8', 'http://svc.internal/h'])).stdout).url, '/h');
      assert.notEqual((await b.exec(['curl', '-sS', '--max-time', '8', 'http://api.test/'])).exit_code, 0, 'b: api.test stays blocked');
      // The no-network claim has what a cold create without network has: no link but loopback.
      assert.doesNotMatch((await plain.exec(['cat', '/proc/net/dev'])).stdout, /eth0/);
      assert.equal((await plain.exec(['sh', '-c', 'echo $TOKEN'])).stdout, 'plain\n');
      t = await d.client.templates.get('svc');
      assert.equal(t.warm.claims, before + 3);
    } finally {
      await Promise.all([a, b, plain].map((s) => s.remove({ force: true })));
    }
    assert.equal(await fi.outsideHits(), 0);
  });

  it('a claim the networked members cannot serve (another mtu) is a cold create saying why', async () => {
    await d.client.templates.setWarm('svc', 1, { network: 1 });
    await poolReady('svc', 1);
    const sbx = await d.client.create({ template: 'svc', network: { mode: 'allowlist', allow_hosts: ['api.test'], mtu: 1400 } });
    try {
      const miss = (await sbx.events_()).find((e) => e.type === 'pool-miss');
      assert.match(miss?.message ?? '', /mtu 1400/);
      assert.equal(JSON.parse((await sbx.exec(['curl', '-sS', '--max-time', '8', 'http://api.test/cold'])).stdout).url, '/cold');
    } finally {
      await sbx.remove({ force: true });
    }
    const bad = await cli(d, ['template', 'warm', 'svc', '1', '--network', '2']);
    assert.equal(bad.code, 64, bad.stderr);
    assert.match(bad.stderr, /network/);
    await d.client.templates.setWarm('svc', 1, { network: 0 });
    assert.equal((await poolReady('svc', 1)).warm.network_ready, 0);
  });

  it('a ready command that never passes fails the build with the output of both, and leaves no template', async () => {
    const r = await cli(d, ['template', 'build', 'never', '--context', context('never', 'FROM base\n'), '--start-cmd', 'echo booting-up; sleep 1000', '--ready-cmd', 'echo still-waiting; false', '--ready-timeout', '2', '--warm', '1']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /ready command did not pass within 2s/);
    assert.match(r.stderr, /booting-up/);
    assert.match(r.stderr, /still-waiting/);
    assert.equal((await cli(d, ['template', 'inspect', 'never'])).code, 66);
  });

  it('a daemon restart keeps the template and refills its pool with new members', async () => {
    const before = (await cli(d, ['template', 'inspect', 'svc'])).code;
    assert.equal(before, 0);
    const oldMembers = (await d.client.templates.get('svc')).warm.members;
    assert.equal(oldMembers.length, 1);
    await d.stop();
    await d.restart();
    const t = await poolReady('svc', 1);
    assert.ok(t.snapshot);
    assert.ok(!t.warm.members.includes(oldMembers[0]), 'members from before the restart were replaced');
    const sbx = await d.client.create({ template: 'svc' });
    try {
      assert.ok(!oldMembers.includes(sbx.id));
      assert.equal((await sbx.exec(FIRST_REQUEST)).stdout, 'served\n');
      assert.ok((await eventTypes(sbx.id)).includes('pool-claim'));
    } finally {
      await sbx.remove({ force: true });
    }
    await d.client.templates.setWarm('svc', 0);
    const rm = await cli(d, ['template', 'rm', 'svc']);
    assert.equal(rm.code, 0, `with its pool empty and no sandboxes, it goes: ${rm.stderr}`);
  });
});
