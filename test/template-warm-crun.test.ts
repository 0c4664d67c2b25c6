// Warm pools under crun with per-request network: members without a namespace serve creates without a
// network, members waiting in a deny-all namespace serve creates with a policy, which the claim applies
// before create returns. Egress goes only to a fake internet in a namespace this file creates.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, tearDownNetSuite, type FakeInternet } from './helpers/net-fake-internet.js';
import type { TemplateInfo } from '../src/sdk/templates.js';

const SLOT = 18;
let d: TestDaemon;
let fi: FakeInternet;
let work: string;

before(async () => {
  work = mkdtempSync('/var/lib/cordon-test/tmpl-warm-crun-');
  fi = await startFakeInternet(SLOT);
  d = await startDaemon('template-warm-crun', { args: [...fi.daemonArgs(SLOT), '--runtime', 'crun'] });
});

after(async () => {
  for (const t of (await d?.client.templates.list().catch(() => [])) ?? []) await d.client.templates.setWarm(t.name, 0).catch(() => {});
  await tearDownNetSuite(d, SLOT, fi);
  rmSync(work, { recursive: true, force: true });
});

async function poolReady(name: string, n: number, net: number): Promise<TemplateInfo> {
  for (let i = 0; i < 600; i++) {
    const t = await d.client.templates.get(name);
    if (t.warm.ready === n && t.warm.network_ready === net && t.warm.starting === 0) return t;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the pool of ${name} never reached ${n} ready (${net} networked): ${JSON.stringify((await d.client.templates.get(name)).warm)}`);
}

describe('warm pools under crun with per-request network', () => {
  it('a networked member reaches nothing until claimed; a claim gets its own policy, a no-network claim no link', async () => {
    // No RUN step (it would cost a build sandbox): the template is base with an env and a service.
    writeFileSync(join(work, 'Dockerfile'), 'FROM base\nENV MARK=crun-ready\n');
    const r = await cli(d, ['template', 'build', 'svcc', '--context', work, '--start-cmd', 'sleep 100000', '--ready-cmd', 'test "$MARK" = crun-ready', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const w = await cli(d, ['template', 'warm', 'svcc', '2', '--network', '1', '--json']);
    assert.equal(w.code, 0, w.stderr);
    const t = await poolReady('svcc', 2, 1);
    const members = await Promise.all(t.warm.members.map((id) => d.client.get(id)));
    const waiting = members.find((s) => s.info.network?.mode === 'allowlist')!;
    const probe = await waiting.exec(['sh', '-c', `getent hosts api.test; curl -sS --max-time 5 http://api.test/m; curl -sS --max-time 5 http://${fi.api}/m; echo done`]);
    assert.doesNotMatch(probe.stdout, /"url"/, `a waiting member reached a host: ${probe.stdout}`);
    assert.match(probe.stdout, /done/);

    const net = await d.client.create({ template: 'svcc', env: { TOKEN: 'c1' }, network: { mode: 'allowlist', allow_hosts: ['other.test'], secrets: ['KEY=crun-secret@other.test'] } });
    const plain = await d.client.create({ template: 'svcc' });
    try {
      for (const s of [net, plain]) {
        const evs = (await s.events_()).map((e) => e.type);
        assert.ok(evs.includes('pool-claim') && !evs.includes('pool-miss'), evs.join(','));
      }
      const got = JSON.parse((await net.exec(['sh', '-c', 'curl -sS --max-time 8 -H "X-Key: $KEY" "http://other.test/c?t=$TOKEN"'])).stdout);
      assert.equal(got.url, '/c?t=c1');
      assert.equal(got.headers['x-key'], 'crun-secret');
      assert.notEqual((await net.exec(['curl', '-sS', '--max-time', '8', 'http://api.test/'])).exit_code, 0, 'api.test is not in this claim\'s allowlist');
      assert.doesNotMatch((await plain.exec(['cat', '/proc/net/dev'])).stdout, /eth0/, 'a no-network claim has no link, as a cold create');
      assert.equal((await d.client.templates.get('svcc')).warm.claims, 2);
    } finally {
      await net.remove({ force: true });
      await plain.remove({ force: true });
    }
    assert.equal(await fi.outsideHits(), 0);
  });
});
