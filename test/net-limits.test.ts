// Bounds of the egress proxy, on every runtime, against the fake internet: an upstream that never
// answers fails at the idle timeout, a sandbox past its connection cap is refused, and bodies are
// held in memory only up to a cap (request bodies searched for secrets, responses rewritten by rules).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, tearDownNetSuite, type FakeInternet } from './helpers/net-fake-internet.js';

const SLOT = 21;
const CAP = 4;
let d: TestDaemon;
let fi: FakeInternet;

before(async () => {
  fi = await startFakeInternet(SLOT);
  d = await startDaemon('net-limits', { args: [...fi.daemonArgs(SLOT), '--egress-idle-timeout', '3s', '--egress-max-connections', String(CAP)] });
});
after(() => tearDownNetSuite(d, SLOT, fi));

const sh = async (sb: Sandbox, script: string) => {
  const r = await sb.exec(['sh', '-c', script], { timeout: 90 });
  return { code: r.exit_code, out: r.stdout.trim(), err: r.stderr.trim() };
};
const netEvents = async (sb: Sandbox) => (await sb.events_()).filter((e) => e.type === 'network').map((e) => e.data as Record<string, unknown>);

for (const runtime of RUNTIMES) {
  describe(`egress limits on ${runtime}`, () => {
    test('an upstream that accepts and never answers fails at the idle timeout with 504 and a block event', async () => {
      const sb = await d.client.create({ runtime, network: { allow_hosts: ['api.test'] } });
      try {
        const r = await sh(sb, `curl -sS --max-time 40 -o /dev/null -w '%{http_code}' http://api.test/hang`);
        assert.equal(r.out, '504', r.err);
        const ev = (await netEvents(sb)).find((e) => String(e.url).endsWith('/hang'));
        assert.equal(ev?.blocked, true);
        assert.equal(ev?.status, 504);
        assert.match(String(ev?.block_reason), /sent nothing for 3s/);
      } finally {
        await d.client.remove(sb.id, { force: true });
      }
    });

    test(`more than ${CAP} concurrent connections from one sandbox are refused; slots free up when they close`, async () => {
      const sb = await d.client.create({ runtime, network: { allow_hosts: ['api.test'] } });
      try {
        const script = [
          'p=""',
          `for i in $(seq ${CAP}); do curl -s -N --max-time 60 -o /tmp/d$i http://api.test/drip 2>/dev/null & p="$p $!"; done`,
          // Wait (polling) until every drip has its first byte: all connections are open.
          'n=0; for i in $(seq 600); do n=0; for f in /tmp/d*; do [ -s "$f" ] && n=$((n+1)); done; [ "$n" -eq ' + CAP + ' ] && break; sleep 0.1; done',
          `echo "open=$n"`,
          `curl -sS --max-time 10 -o /dev/null -w 'code=%{http_code}' http://api.test/ 2>/dev/null; echo " rc=$?"`,
          'kill $p; wait',
        ].join('\n');
        const r = await sh(sb, script);
        assert.match(r.out, new RegExp(`open=${CAP}`), r.out);
        assert.doesNotMatch(r.out, / rc=0$/, `the connection past the cap is refused: ${r.out}`);
        const ev = (await netEvents(sb)).find((e) => /too many connections/.test(String(e.block_reason)));
        assert.ok(ev, 'the refusal is reported');
        // The closed connections gave their slots back.
        const again = await sh(sb, `for i in $(seq 100); do c=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' http://api.test/); [ "$c" = 200 ] && break; sleep 0.1; done; echo $c`);
        assert.equal(again.out, '200');
      } finally {
        await d.client.remove(sb.id, { force: true });
      }
    });

    test('a request body past the inspection cap is refused with 413 when the sandbox has secrets; small ones are substituted', async () => {
      const sb = await d.client.create({ runtime, network: { allow_hosts: ['api.test'], secrets: ['TOKEN=s3cr3t-value@api.test'] } });
      try {
        const small = await sh(sb, `curl -sS --max-time 20 -d "x=$TOKEN" http://api.test/small`);
        assert.equal(JSON.parse(small.out).body, 'x=s3cr3t-value');
        await sh(sb, `head -c 2000000 /dev/zero | tr '\\0' a > /tmp/big`);
        for (const extra of ['', `-H 'Transfer-Encoding: chunked'`]) {
          const big = await sh(sb, `curl -sS --max-time 30 -w ' %{http_code}' -X POST ${extra} --data-binary @/tmp/big http://api.test/upload`);
          const what = `${extra || 'declared length'}: ${big.out.slice(0, 200)} ${big.err}`;
          assert.ok(/ 413$/.test(big.out), what);
          assert.ok(/larger than 1048576 bytes/.test(big.out), what);
        }
        const ev = (await netEvents(sb)).find((e) => e.status === 413);
        assert.equal(ev?.blocked, true);
      } finally {
        await d.client.remove(sb.id, { force: true });
      }
    });

    test('response body replacement applies up to the cap; a larger body passes unchanged, with a note in the event', async () => {
      const rules = [{ phase: 'after', body_replacements: [{ find: 'secret-word', replace: 'redacted' }] }];
      const sb = await d.client.create({ runtime, network: { allow_hosts: ['api.test'], rules } });
      try {
        const fetchHead = (q: string) => sh(sb, `curl -sS --max-time 30 -o /tmp/b 'http://api.test/big?${q}' && head -c 11 /tmp/b && echo " $(wc -c < /tmp/b)"`);
        assert.equal((await fetchHead('n=1000')).out, 'redactedaaa 997', 'a small body is rewritten');
        for (const q of ['n=2000000', 'n=2000000&chunked=1']) {
          assert.equal((await fetchHead(q)).out, 'secret-word 2000000', `${q}: a body past the cap passes unchanged`);
        }
        const notes = (await netEvents(sb)).filter((e) => /body replacement skipped/.test(String(e.note)));
        assert.equal(notes.length, 2);
      } finally {
        await d.client.remove(sb.id, { force: true });
      }
    });
  });
}
