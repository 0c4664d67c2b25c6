// Templates with their service running and warm pools: the service answers right after create (runsc
// from the template's memory snapshot, crun by starting it), a ready command that never passes, claims
// with per-request env, labels and network policy, refill, removal refused while a pool uses the
// template, and a daemon restart. Network parts go to a fake internet (its own namespace) only.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, startDaemon, type TestDaemon } from './helpers/daemon.js';
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
const START = ['--start-cmd', 'python3 -m http.server 8000 --bind 127.0.0.1', '--ready-cmd', 'curl -sf http://127.0.0.1:8000/ > /dev/null'];
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

  it('a claim with a network policy gets it (a cold create, with a pool-miss event); removal is refused while a pool exists', async () => {
    await d.client.templates.setWarm('svc', 1);
    await poolReady('svc', 1);
    const rm = await cli(d, ['template', 'rm', 'svc']);
    assert.notEqual(rm.code, 0);
    assert.match(rm.stderr, /warm pool/);
    const sbx = await d.client.create({ template: 'svc', env: { TOKEN: 'net-claim' }, network: { mode: 'allowlist', allow_hosts: ['api.test'] } });
    try {
      const evs = await eventTypes(sbx.id);
      assert.ok(evs.includes('pool-miss'), evs.join(','));
      assert.equal((await sbx.exec(FIRST_REQUEST)).stdout, 'served\n');
      const out = await sbx.exec(['sh', '-c', 'curl -sS --max-time 8 http://api.test/claimed?t=$TOKEN']);
      assert.equal(JSON.parse(out.stdout).url, '/claimed?t=net-claim', 'the request policy allows api.test, with the request env');
      const blocked = await sbx.exec(['curl', '-sS', '--max-time', '8', 'http://other.test/']);
      assert.notEqual(blocked.exit_code, 0, 'other hosts stay blocked');
      assert.equal((await d.client.templates.get('svc')).warm.ready, 1, 'the pool member was not used');
    } finally {
      await sbx.remove({ force: true });
    }
    assert.equal(await fi.outsideHits(), 0);
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
