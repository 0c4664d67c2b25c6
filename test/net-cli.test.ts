// The CLI's network commands against a daemon whose egress goes to a fake internet (never the
// uplink), on every runtime: allow / deny / rm / show (human and --json), bad patterns (exit 64,
// nothing changed), and `cordon events ID --follow --type network` streaming network events live.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { until } from './helpers/assert.js';
import { CLI, cli, RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, tearDownNetSuite, type FakeInternet } from './helpers/net-fake-internet.js';

const SLOT = 11;
let d: TestDaemon;
let fi: FakeInternet;

before(async () => {
  fi = await startFakeInternet(SLOT);
  d = await startDaemon('net-cli', { args: fi.daemonArgs(SLOT) });
});
after(() => tearDownNetSuite(d, SLOT, fi));

const curl = async (sb: Sandbox, url: string) => (await sb.exec(['curl', '-sS', '--max-time', '8', url], { timeout: 30 })).exit_code;

for (const runtime of RUNTIMES) {
  describe(`cordon network on ${runtime}`, () => {
    let sb: Sandbox;
    before(async () => {
      sb = await d.client.create({ runtime, network: { allow_hosts: ['api.test'] } });
    });
    after(async () => {
      await sb?.remove().catch(() => {});
    });

    test('allow, deny, rm and show change and report the running sandbox rules', async () => {
      assert.notEqual(await curl(sb, 'https://other.test/'), 0);
      const allowed = await cli(d, ['network', 'allow', sb.id, 'other.test', '*.extra.test', '--json']);
      assert.equal(allowed.code, 0, allowed.stderr);
      assert.deepEqual(JSON.parse(allowed.stdout).allow_hosts, ['api.test', 'other.test', '*.extra.test']);
      assert.equal(await curl(sb, 'https://other.test/'), 0, 'reachable after cordon network allow');

      const denied = await cli(d, ['network', 'deny', sb.id, 'other.test']);
      assert.equal(denied.code, 0, denied.stderr);
      assert.match(denied.stdout, /DENY\s+other\.test/);
      assert.notEqual(await curl(sb, 'https://other.test/'), 0, 'a deny entry wins over the allow entry');

      const removed = await cli(d, ['network', 'rm', sb.id, 'other.test', '*.extra.test', '--json']);
      assert.equal(removed.code, 0, removed.stderr);
      const after = JSON.parse(removed.stdout);
      assert.deepEqual([after.allow_hosts, after.deny_hosts], [['api.test'], []]);

      const shown = await cli(d, ['network', 'show', sb.id]);
      assert.equal(shown.code, 0, shown.stderr);
      assert.match(shown.stdout, /MODE\s+allowlist/);
      assert.match(shown.stdout, /ALLOW\s+api\.test\n/);
      assert.equal(JSON.parse((await cli(d, ['network', 'show', sb.id, '--json'])).stdout).mode, 'allowlist');
      assert.equal(await curl(sb, 'https://api.test/'), 0, 'api.test stays allowed');
    });

    test('a bad pattern or an unknown sandbox is a usage/not-found error and changes nothing', async () => {
      const bad = await cli(d, ['network', 'allow', sb.id, 'not a host!', 'fine.test', '--json']);
      assert.equal(bad.code, 64, bad.stdout + bad.stderr);
      assert.match(bad.stdout, /invalid_argument/);
      assert.deepEqual((await sb.refresh()).network?.allow_hosts, ['api.test'], 'the valid entry of a refused request is not added either');
      const missing = await cli(d, ['network', 'show', 'nosuchsandbox']);
      assert.equal(missing.code, 66);
    });

    test('events --follow --type network streams connection events as they happen', async () => {
      const p = spawn(process.execPath, [CLI, 'events', sb.id, '--follow', '--type', 'network', '--json'], { env: { ...process.env, CORDON_URL: d.url }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (c) => (out += c));
      try {
        // Earlier network events of this sandbox are replayed first; the new one arrives live.
        await until('the replay of earlier events', () => out.includes('"network"'));
        const parse = () => out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string; data: Record<string, unknown> });
        const blockedOther = () => parse().filter((l) => l.data?.blocked === true && l.data?.host === 'other.test').length;
        const before = parse().length;
        const blockedBefore = blockedOther();
        await curl(sb, `https://api.test/followed-${runtime}`);
        await curl(sb, 'https://other.test/blocked-live');
        await until('the live events', () => out.includes(`followed-${runtime}`) && blockedOther() > blockedBefore);
        const lines = parse();
        assert.ok(lines.length > before);
        assert.ok(lines.every((l) => l.type === 'network'), 'only network events with --type network');
        assert.ok(lines.some((l) => l.data?.host === 'api.test' && l.data?.status === 200 && String(l.data?.url).includes(`followed-${runtime}`)));
        assert.equal(p.exitCode, null, 'it keeps following');
      } finally {
        p.kill('SIGTERM');
      }
    });
  });
}
