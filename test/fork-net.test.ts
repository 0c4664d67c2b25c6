// Networking across restore: a networked sandbox (allowlist, a secret) forked three times. Each fork
// gets its own namespace and address under the parent's policy; the secret's placeholder (the same
// as the parent's: under runsc it lives on in restored memory) is swapped toward the allowed host
// only. A sandbox holding an open TCP connection cannot be checkpointed: 409, and it runs on.
// Egress goes only to a fake internet in a namespace of the test's own. Run under the net lock.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, type FakeInternet } from './helpers/net-fake-internet.js';
import { rejectsWith, until } from './helpers/assert.js';

const SLOT = 26;
let d: TestDaemon;
let fi: FakeInternet;

before(async () => {
  fi = await startFakeInternet(SLOT);
  d = await startDaemon('fork-net', { args: fi.daemonArgs(SLOT) });
});
after(async () => {
  for (const s of (await d?.client.list().catch(() => [])) ?? []) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d?.cleanup();
  await fi?.close();
});

const sh = async (sb: Sandbox, script: string) => {
  const r = await sb.exec(['sh', '-c', script], { timeout: 30 });
  return { code: r.exit_code, out: r.stdout.trim(), err: r.stderr.trim() };
};
/** The address the sandbox sends from toward the fake internet (a UDP connect sends nothing). */
const address = (sb: Sandbox) =>
  sh(sb, `python3 -c "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.connect(('${fi.api}',80));print(s.getsockname()[0])"`);

for (const runtime of RUNTIMES) {
  describe(`fork with a network on ${runtime}`, () => {
    let parent: Sandbox;
    let forks: Sandbox[] = [];

    test('three forks: distinct addresses, the parent policy, secrets swapped toward the allowed host only', async () => {
      parent = await d.client.create({ runtime, network: { allow_hosts: ['api.test'], secrets: ['TOKEN=fork-secret@api.test'] } });
      const parentAddr = await address(parent);
      assert.equal(parentAddr.code, 0, parentAddr.err);
      const placeholder = (await sh(parent, 'echo $TOKEN')).out;
      assert.match(placeholder, /^CORDON_SECRET_TOKEN_/);
      // A process started before the fork holds the placeholder in its memory.
      assert.equal((await sh(parent, `(while :; do sleep 1; done) & echo started`)).code, 0);

      const results = await parent.fork({ count: 3, timeout: '10m' });
      assert.equal(results.length, 3);
      forks = results.map((r) => {
        assert.ok(r.sandbox, JSON.stringify(r.error));
        return d.client.sandbox(r.sandbox.id, r.sandbox as never);
      });
      const addrs = new Set([parentAddr.out]);
      for (const f of forks) {
        assert.equal(f.info.network?.mode, 'allowlist');
        const a = await address(f);
        assert.equal(a.code, 0, a.err);
        addrs.add(a.out);
        assert.equal((await sh(f, 'echo $TOKEN')).out, placeholder, 'the same placeholder as the parent');
        const ok = await sh(f, `curl -sS --max-time 8 -H "Authorization: Bearer $TOKEN" https://api.test/fork`);
        assert.equal(ok.code, 0, ok.err);
        assert.equal(JSON.parse(ok.out).headers.authorization, 'Bearer fork-secret', 'swapped toward api.test');
        const other = await sh(f, 'curl -sS --max-time 8 https://other.test/');
        assert.notEqual(other.code, 0, 'other.test is not allowed');
        const leak = await sh(f, `curl -sS --max-time 8 -H "X: $TOKEN" http://${fi.other}/`);
        assert.doesNotMatch(leak.out, /fork-secret/);
      }
      assert.equal(addrs.size, 4, `each fork has its own address: ${[...addrs].join(', ')}`);
      // The parent runs on with its own network.
      const p = await sh(parent, 'curl -sS --max-time 8 https://api.test/parent');
      assert.equal(p.code, 0, p.err);
    });

    test('forks change policy independently', async () => {
      await forks[0].changeNetwork({ add: ['other.test'] });
      assert.equal((await sh(forks[0], 'curl -sS --max-time 8 https://other.test/')).code, 0);
      assert.notEqual((await sh(forks[1], 'curl -sS --max-time 8 https://other.test/')).code, 0);
      for (const f of forks) await d.client.remove(f.id, { force: true });
    });

    if (runtime === 'runsc') {
      test('an open TCP connection cannot be checkpointed: 409 naming it, the sandbox runs on', async () => {
        await sh(parent, `python3 -c "import socket,time;s=socket.create_connection(('api.test',443));time.sleep(600)" >/dev/null 2>&1 &`);
        await until('the connection is open', async () => (await sh(parent, 'cat /proc/net/tcp | grep -c " 01 "')).out !== '0');
        await rejectsWith(parent.snapshot(), 'invalid_state', /TCP connections/);
        await rejectsWith(parent.fork({ count: 1 }), 'invalid_state', /TCP connections/);
        assert.equal((await parent.refresh()).state, 'running');
        assert.equal((await sh(parent, 'echo alive')).out, 'alive');
        assert.deepEqual(await d.client.snapshots(), []);
      });
    }
  });
}
