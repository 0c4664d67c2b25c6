// Robustness of single modules under failure, no daemon: helper programs killed at their deadline
// (with their whole process group), lock waiters bounded, create slots and CPU-pressure admission,
// and the event log's batches and retention on a real SQLite file. The daemon-level cases (a wedged
// runtime, a create storm) are in robustness.test.ts.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { rejectsWith, sleep, until } from './helpers/assert.js';
import { CreateSlots, admitCpu, hostCpuPressure } from '../src/engine/admission.js';
import { KeyedLock } from '../src/engine/keyed-lock.js';
import { openDatabase } from '../src/store/db.js';
import { SandboxStore } from '../src/store/sandboxes.js';
import type { SandboxEvent } from '../src/engine/types.js';
import { pidAlive, run } from '../src/util/proc.js';

const WORK = `/var/lib/cordon-test/robust-units-${process.pid}`;

before(() => {
  rmSync(WORK, { recursive: true, force: true });
  mkdirSync(WORK, { recursive: true });
});
after(() => rmSync(WORK, { recursive: true, force: true }));

describe('deadlines, locks and admission (one module each)', () => {
  test('run kills the whole process group at the deadline and names the call', async () => {
    const pidFile = join(WORK, 'grandchild.pid');
    const err = await rejectsWith(run('sh', ['-c', `sleep 1000 & echo $! > ${pidFile}; wait`], { timeoutMs: 500, label: 'test helper' }), 'deadline_exceeded', /^test helper did not finish within 0.5s and was killed/);
    assert.deepEqual((err as unknown as { details: unknown }).details, { command: 'test helper', timeout_ms: 500 });
    const grandchild = Number(readFileSync(pidFile, 'utf8'));
    await until('the background grandchild is gone too', () => !pidAlive(grandchild), 10_000);
    assert.equal((await run('true', [])).code, 0, 'a quick call is unaffected');
  });

  test('a lock waiter gives up with 503 "busy" after its bound, and order holds for the rest', async () => {
    const lock = new KeyedLock(200);
    const order: string[] = [];
    let release!: () => void;
    const holder = lock.run('sb', () => new Promise<void>((r) => (release = r)).then(() => void order.push('holder')));
    const impatient = lock.run('sb', async () => void order.push('impatient'));
    const patient = lock.run('sb', async () => void order.push('patient'), 60_000);
    const err = await rejectsWith(impatient, 'unavailable', /sandbox sb is busy with another operation/);
    assert.equal(err.status, 503);
    assert.deepEqual(order, [], 'nobody ran past the holder');
    release();
    await Promise.all([holder, patient]);
    assert.deepEqual(order, ['holder', 'patient']);
    assert.equal(await lock.run('sb', async () => 'free again'), 'free again');
  });

  test('create slots: a few run, a bounded queue waits in order, the rest get 429 with retry_after_s', async () => {
    const slots = new CreateSlots(2, 1);
    const a = await slots.acquire();
    const b = await slots.acquire();
    let cGot = false;
    const c = slots.acquire().then((r) => ((cGot = true), r));
    await sleep(20);
    assert.equal(cGot, false, 'the third waits');
    const full = await rejectsWith(slots.acquire(), 'rate_limited', /retry in a moment/);
    assert.equal(full.status, 429);
    a();
    a(); // a second release must not free another slot
    const releaseC = await c;
    const d = slots.acquire();
    await rejectsWith(slots.acquire(), 'rate_limited', /2 sandboxes are being created and 1 more wait/);
    b();
    const releaseD = await d;
    releaseC();
    releaseD();
    (await slots.acquire())();
    (await slots.acquire())();
  });

  test('CPU pressure: parsed from PSI, a host without it is not judged, 503 at the threshold', async () => {
    const psi = join(WORK, 'pressure-cpu');
    writeFileSync(psi, 'some avg10=72.50 avg60=20.00 avg300=5.00 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n');
    assert.equal(await hostCpuPressure(psi), 72.5);
    assert.equal(await hostCpuPressure(join(WORK, 'missing')), undefined);
    await admitCpu(80, async () => 72.5);
    await admitCpu(50, async () => undefined);
    await admitCpu(0, async () => 100);
    await assert.rejects(admitCpu(70, async () => 72.5), (e: { status: number; message: string; details: { retry_after_s: number } }) => e.status === 503 && /CPU is saturated/.test(e.message) && e.details.retry_after_s === 5);
  });
});

describe('event log: batches and retention (real SQLite file)', () => {
  let store: SandboxStore;
  let db: ReturnType<typeof openDatabase>;
  const count = (id: string) => (db.prepare('SELECT COUNT(*) AS n FROM events WHERE sandbox_id = ?').get(id) as { n: number }).n;
  before(() => {
    db = openDatabase(join(WORK, 'events.db'));
    store = new SandboxStore(db);
  });
  after(() => db.close());

  test('queued events are written together, in order with direct ones, and reach the feed in seq order', async () => {
    const fed: SandboxEvent[] = [];
    store.feed.on('event', (e: SandboxEvent) => fed.push(e));
    for (let i = 0; i < 30; i++) store.queueEvent('a', 'network', `request ${i}`, { i });
    assert.equal(count('a'), 0, 'nothing written yet: the batch waits');
    store.addEvent('a', 'stopped', 'after request 29');
    assert.equal(count('a'), 31, 'a direct event writes the queued ones first');
    for (let i = 30; i < 130; i++) store.queueEvent('a', 'network', `request ${i}`, { i });
    assert.equal(count('a'), 131, 'a full batch is written at once');
    for (let i = 130; i < 140; i++) store.queueEvent('a', 'network', `request ${i}`, { i });
    await until('the batch timer writes the rest', () => count('a') === 141, 10_000);
    const all = store.events('a', 0, 10_000);
    const names = all.map((e) => e.message);
    assert.deepEqual(names.slice(0, 31), [...Array.from({ length: 30 }, (_, i) => `request ${i}`), 'after request 29']);
    assert.deepEqual(names.slice(31), Array.from({ length: 110 }, (_, i) => `request ${i + 30}`));
    assert.deepEqual(all[5].data, { i: 5 });
    assert.deepEqual(fed.map((e) => e.seq), all.map((e) => e.seq), 'the feed saw every event once, in seq order');
  });

  test('retention keeps the newest N per sandbox and drops events past the age limit', async () => {
    for (let i = 0; i < 5000; i++) store.queueEvent('b', 'network', `b ${i}`);
    for (let i = 0; i < 20; i++) store.addEvent('c', 'exec', `c ${i}`);
    const removed = await store.pruneEvents(100, 0);
    assert.equal(removed, 141 - 100 + 5000 - 100);
    assert.deepEqual(store.events('b', 0, 10_000).map((e) => e.message), Array.from({ length: 100 }, (_, i) => `b ${i + 4900}`));
    assert.equal(count('a'), 100);
    assert.equal(count('c'), 20, 'a sandbox under the limit keeps everything');
    store.addEvent('c', 'exec', 'c late');
    assert.equal(await store.pruneEvents(100, 0), 0, 'later passes look only at sandboxes with new events');
    const later = Date.now() + 60_000;
    assert.equal(await store.pruneEvents(0, 30_000, later), 221, 'everything is older than 30 s a minute from now');
    assert.equal((db.prepare('SELECT COUNT(*) AS n FROM events').get() as { n: number }).n, 0);
  });
});
