// The official `e2b` SDK's snapshots and fork against cordon (runsc, the default): createSnapshot,
// Sandbox.create(snapshotId) with the process and its memory, listSnapshots with paging and filters,
// deleteSnapshot (refused while used, true, then false), and fork with one result per fork.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Sandbox } from 'e2b';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';
import { until } from './helpers/assert.js';

let d: TestDaemon;
let o: { apiKey: string; apiUrl: string; sandboxUrl: string; domain: string };

before(async () => {
  d = await startDaemon('e2b-snapshots', { args: ['--max-sandboxes', '3'] });
  o = { apiKey: 'e2b_dummy', apiUrl: d.url, sandboxUrl: d.url, domain: 'cordon.invalid' };
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  for (const s of await d.client.snapshots().catch(() => [])) await d.client.removeSnapshot(s.id).catch(() => {});
  await d.cleanup();
});

async function count(s: Sandbox): Promise<number[]> {
  const out = (await s.commands.run('cat /home/user/count')).stdout;
  return out.trim().split('\n').filter(Boolean).map(Number);
}

describe('e2b snapshots and fork', () => {
  let source: Sandbox;
  const snapshotIds: string[] = [];

  test('createSnapshot; Sandbox.create(snapshotId) brings the files and the counting process', async () => {
    source = await Sandbox.create({ ...o, timeoutMs: 300_000 });
    await source.files.write('/home/user/note', 'kept');
    await source.commands.run('i=0; while :; do i=$((i+1)); echo $i >> /home/user/count; sleep 0.2; done', { background: true });
    await until('the counter counts', async () => (await count(source)).length >= 5);

    const named = await source.createSnapshot({ name: `e2b-snap-${process.pid}` });
    assert.equal(named.snapshotId, `cordon/e2b-snap-${process.pid}:default`);
    assert.deepEqual(named.names, [named.snapshotId]);
    const unnamed = await Sandbox.createSnapshot(source.sandboxId, o);
    assert.match(unnamed.snapshotId, /^[a-z0-9]+:default$/);
    assert.deepEqual(unnamed.names, []);
    snapshotIds.push(named.snapshotId, unnamed.snapshotId);
    assert.equal(await source.isRunning(), true, 'the source runs on');

    const child = await Sandbox.create(named.snapshotId, { ...o, timeoutMs: 120_000 });
    assert.notEqual(child.sandboxId, source.sandboxId);
    assert.equal(await child.files.read('/home/user/note'), 'kept');
    const first = await count(child);
    assert.ok(first.length >= 5);
    await until('the restored counter counts on', async () => (await count(child)).length > first.length + 3);
    (await count(child)).forEach((v, i) => assert.equal(v, i + 1, 'the count never started again'));
    await child.kill();
  });

  test('listSnapshots: filter by sandbox and name, paged with x-next-token', async () => {
    const third = await source.createSnapshot();
    snapshotIds.push(third.snapshotId);
    const seen: string[] = [];
    const pager = Sandbox.listSnapshots({ ...o, sandboxId: source.sandboxId, limit: 1 });
    let pages = 0;
    while (pager.hasNext) {
      const items = await pager.nextItems();
      pages++;
      assert.ok(items.length <= 1);
      seen.push(...items.map((s) => s.snapshotId));
    }
    assert.deepEqual(seen, snapshotIds, 'every snapshot once, oldest first');
    assert.ok(pages >= 3);
    const byName = await Sandbox.listSnapshots({ ...o, name: `e2b-snap-${process.pid}` }).nextItems();
    assert.deepEqual(byName.map((s) => s.snapshotId), [snapshotIds[0]]);
    const mine = await source.listSnapshots().nextItems();
    assert.equal(mine.length, 3);
    const none = await Sandbox.listSnapshots({ ...o, sandboxId: 'nosuchsandbox' }).nextItems();
    assert.deepEqual(none, []);
  });

  test('deleteSnapshot: refused while a sandbox uses it, true once free, false when gone', async () => {
    const id = snapshotIds[2];
    const user = await Sandbox.create(id, { ...o, timeoutMs: 120_000 });
    await assert.rejects(Sandbox.deleteSnapshot(id, o), /409: .*in use by sandbox/);
    await user.kill();
    assert.equal(await Sandbox.deleteSnapshot(id, o), true);
    assert.equal(await Sandbox.deleteSnapshot(id, o), false);
    // Ids with "/" and ":" arrive URL-encoded.
    assert.equal(await Sandbox.deleteSnapshot(snapshotIds[0], o), true);
    assert.equal(await Sandbox.deleteSnapshot(snapshotIds[1], o), true);
    assert.deepEqual(await source.listSnapshots().nextItems(), []);
  });

  test('fork: one entry per fork, each from the current state, diverging; errors per fork', async () => {
    await source.files.write('/home/user/before-fork', 'yes');
    const forks = await source.fork({ count: 2, timeoutMs: 120_000 });
    assert.equal(forks.length, 2);
    const [f1, f2] = forks as Sandbox[];
    for (const f of [f1, f2]) {
      assert.ok(f instanceof Sandbox, String(f));
      assert.equal(await f.files.read('/home/user/before-fork'), 'yes');
      const c = await count(f);
      await until('the fork counts on', async () => (await count(f)).length > c.length + 2);
    }
    await f1.files.write('/home/user/mine', '1');
    assert.equal(await f2.files.exists('/home/user/mine'), false);
    assert.equal(await source.files.exists('/home/user/mine'), false);
    assert.equal(await source.isRunning(), true);
    for (const f of [f1, f2]) await f.kill();
    // Past the daemon's cap (--max-sandboxes 3: the source and two forks) each further fork reports
    // its own error, as E2B does; the request itself succeeds.
    const capped = await source.fork({ count: 3, timeoutMs: 120_000 });
    assert.equal(capped.length, 3);
    const ok = capped.filter((f): f is Sandbox => f instanceof Sandbox);
    const failed = capped.filter((f) => !(f instanceof Sandbox)) as Error[];
    assert.equal(ok.length, 2);
    assert.equal(failed.length, 1);
    assert.equal(failed[0].name, 'RateLimitError', String(failed[0]));
    for (const f of ok) await f.kill();
    await assert.rejects(Sandbox.fork('nosuchsandbox', o), /not found/i);
  });
});
