// Helper sets (src/engine/helper-sets.ts): content-addressed copies of the programs bound into
// sandboxes, so a restore binds what its checkpoint ran. Unit test on a temporary directory; the
// upgrade itself (pause, new agent build, resume) is in pause.test.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { HelperSets } from '../src/engine/helper-sets.js';

const dir = mkdtempSync(join(tmpdir(), 'cordon-helper-sets-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, content: string) => {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
};

test('the same programs give the same set, copied once, read-only; other content gives another set', async () => {
  const sets = new HelperSets(join(dir, 'helpers'));
  const h = { busybox: file('busybox', 'bb'), tini: file('tini', 'tini'), agent: { binary: file('agent', 'a1'), supervisor: file('sup', 's') } };
  const a = await sets.install(h);
  const again = await sets.install(h);
  assert.equal(again.id, a.id);
  assert.match(a.id, /^[0-9a-f]{16}$/);
  assert.equal(readdirSync(join(dir, 'helpers', 'files')).length, 4);
  assert.equal(statSync(a.agent!.binary).mode & 0o777, 0o555);
  writeFileSync(h.agent.binary, 'a2');
  const b = await sets.install(h);
  assert.notEqual(b.id, a.id);
  assert.equal(b.busybox, a.busybox, 'unchanged programs are shared between sets');
  assert.equal(readdirSync(join(dir, 'helpers', 'files')).length, 5);
  assert.deepEqual(sets.get(a.id), a, 'the older set is still there to restore with');
  const noAgent = await sets.install({ busybox: h.busybox, tini: h.tini });
  assert.equal(sets.get(noAgent.id)?.agent, undefined);
});

test('a malformed id, an unknown one, or a set with a file gone is not given', async () => {
  const sets = new HelperSets(join(dir, 'helpers2'));
  const s = await sets.install({ busybox: file('bb2', 'x'), tini: file('tini2', 'y') });
  for (const bad of [undefined, '', '../../etc/passwd', s.id.toUpperCase(), `${s.id}0`, '0123456789abcdef']) assert.equal(sets.get(bad), undefined, String(bad));
  rmSync(s.tini);
  assert.equal(existsSync(s.busybox), true);
  assert.equal(sets.get(s.id), undefined);
  writeFileSync(join(dir, 'id-file'), `${s.id}\n`);
  assert.equal(await HelperSets.readId(join(dir, 'id-file')), s.id);
  writeFileSync(join(dir, 'id-file'), 'nonsense');
  assert.equal(await HelperSets.readId(join(dir, 'id-file')), undefined);
  assert.equal(await HelperSets.readId(join(dir, 'no-such-file')), undefined);
});

test('a short copy or an empty set file left under the final name (a crash before the data reached the disk) is written again', async () => {
  const sets = new HelperSets(join(dir, 'helpers3'));
  const h = { busybox: file('bb3', 'busybox bytes'), tini: file('tini3', 'tini bytes') };
  const s = await sets.install(h);
  for (const p of [s.busybox, s.tini]) {
    chmodSync(p, 0o644);
    truncateSync(p, 3);
  }
  writeFileSync(join(dir, 'helpers3', 'sets', `${s.id}.json`), '');
  assert.equal(sets.get(s.id), undefined);
  const again = await sets.install(h);
  assert.deepEqual(again, s);
  assert.equal(readFileSync(again.busybox, 'utf8'), 'busybox bytes');
  assert.equal(readFileSync(again.tini, 'utf8'), 'tini bytes');
  assert.deepEqual(sets.get(s.id), s);
  const names = [...readdirSync(join(dir, 'helpers3', 'files')), ...readdirSync(join(dir, 'helpers3', 'sets'))];
  assert.deepEqual(names.filter((n) => n.includes('tmp')), [], 'no temporary file is left');
});

test('collect removes the sets not kept and the files only they named; kept sets stay whole', async () => {
  const sets = new HelperSets(join(dir, 'helpers4'));
  const bb = file('bb4', 'busybox');
  const tini = file('tini4', 'tini');
  const old = await sets.install({ busybox: bb, tini, agent: { binary: file('agent4a', 'agent v1'), supervisor: file('sup4', 's') } });
  const mid = await sets.install({ busybox: bb, tini, agent: { binary: file('agent4b', 'agent v2'), supervisor: file('sup4', 's') } });
  const cur = await sets.install({ busybox: bb, tini, agent: { binary: file('agent4c', 'agent v3'), supervisor: file('sup4', 's') } });
  // A fresh temporary file (another install writing it) stays; an hour-old one goes.
  const fresh = join(dir, 'helpers4', 'files', '.agent.tmp-1-aa');
  const stale = join(dir, 'helpers4', 'files', '.agent.tmp-2-bb');
  writeFileSync(fresh, 'x');
  writeFileSync(stale, 'x');
  const hourAgo = new Date(Date.now() - 2 * 3_600_000);
  utimesSync(stale, hourAgo, hourAgo);
  const removed = await sets.collect([cur.id, old.id, 'ffffffffffffffff']);
  assert.deepEqual(removed, { sets: 1, files: 2 });
  assert.deepEqual(sets.get(old.id), old);
  assert.deepEqual(sets.get(cur.id), cur);
  assert.equal(sets.get(mid.id), undefined);
  assert.equal(existsSync(mid.agent!.binary), false, "the agent only the removed set named is gone");
  assert.equal(existsSync(fresh), true);
  assert.equal(existsSync(stale), false);
});
