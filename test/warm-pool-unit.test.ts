// Unit test of the warm pool's bookkeeping (src/engine/templates/warm-pool.ts) with a stand-in manager:
// a restored member is `running` before its create returns (the agent reconnecting), and the pool
// must not report it ready, nor hand it out before a member whose create is done.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeyedLock } from '../src/engine/keyed-lock.js';
import { openDatabase } from '../src/store/db.js';
import { SandboxStore } from '../src/store/sandboxes.js';
import { WarmPools } from '../src/engine/templates/warm-pool.js';
import type { TemplateService } from '../src/engine/templates/template-service.js';
import type { SandboxRecord } from '../src/engine/types.js';
import type { TemplateRecord } from '../src/store/templates.js';

const POOL = 'cordon.pool';

/** A manager whose creates put the record in state running at once and return when `finish(id)` is called. */
function standIn() {
  const recs = new Map<string, SandboxRecord>();
  const events: { id: string; type: string }[] = [];
  const finishers = new Map<string, () => void>();
  const lock = new KeyedLock();
  let n = 0;
  const started: string[] = [];
  const mgr = {
    cfg: { maxSandboxes: 10, defaultRuntime: 'runsc', defaultTimeoutMs: 300_000 },
    admission: { slots: { waiting: 0 } },
    live: new Map<string, { setSpec(s: unknown): void; warmUp(ms: number): Promise<{ ms: number; exitCode?: number }> }>(),
    store: {
      list: () => [...recs.values()].map((r) => structuredClone(r)),
      get: (id: string) => (recs.has(id) ? structuredClone(recs.get(id)!) : undefined),
      withLabel: (k: string, v?: string) => [...recs.values()].filter((r) => (v === undefined ? r.labels[k] !== undefined : r.labels[k] === v)).map((r) => structuredClone(r)),
      update: (id: string, patch: Partial<SandboxRecord>) => recs.set(id, { ...recs.get(id)!, ...patch }),
      addEvent: (id: string, type: string) => events.push({ id, type }),
    },
    countActive: () => recs.size,
    exclusive: <T>(id: string, fn: () => Promise<T>) => lock.run(id, fn),
    schedule: () => {},
    get: (id: string) => structuredClone(recs.get(id)!),
    remove: async (id: string) => void recs.delete(id),
    create: (input: { template: string; labels: Record<string, string> }) => {
      const id = `m${++n}`;
      const now = Date.now();
      recs.set(id, { id, state: 'running', runtime: 'runsc', spec: { template: input.template, env: { FROM_TEMPLATE: '1' }, timeoutMs: 0 } as never, labels: input.labels, createdAt: now, updatedAt: now, startedAt: now });
      mgr.live.set(id, { setSpec: () => {}, warmUp: async () => ({ ms: 1, exitCode: 0 }) });
      started.push(id);
      // As the engine does: the create holds the sandbox's lock until it returns.
      return lock.run(id, () => new Promise<SandboxRecord>((res) => finishers.set(id, () => res(structuredClone(recs.get(id)!)))));
    },
    /** A create that is still restoring (not yet running) when the test looks. */
    restoring(id: string) {
      recs.set(id, { ...recs.get(id)!, state: 'restoring' });
    },
  };
  let tmpl: TemplateRecord = { name: 't', warm: 0 } as TemplateRecord;
  const svc = {
    mgr,
    find: (name: string) => (name === tmpl.name ? tmpl : undefined),
    get: (name: string) => (name === tmpl.name ? tmpl : assert.fail(`no template ${name}`)),
    list: () => [tmpl],
    store: { put: (t: TemplateRecord) => (tmpl = t) },
  };
  const finish = (id: string) => {
    recs.set(id, { ...recs.get(id)!, state: 'running' });
    finishers.get(id)!();
  };
  return { pools: new WarmPools(svc as unknown as TemplateService), mgr, recs, events, started, finish, tmpl: () => tmpl };
}

async function until(what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !ok(); i++) await new Promise((r) => setTimeout(r, 2));
  assert.ok(ok(), what);
}

describe('warm pool bookkeeping (unit)', () => {
  it('a member is ready only once its create has returned; a claim takes a finished member first and applies env, labels, timeout', async () => {
    const s = standIn();
    const sizing = s.pools.setSize('t', 2);
    await until('the first member starts', () => s.started.length === 1);
    let v = s.pools.view(s.tmpl());
    assert.equal(s.recs.get('m1')!.state, 'running');
    assert.deepEqual([v.ready, v.starting], [0, 1], 'running but still in its create: starting, not ready');
    s.finish('m1');
    await until('the second member starts', () => s.started.length === 2);
    v = s.pools.view(s.tmpl());
    assert.deepEqual([v.ready, v.starting], [1, 1]);
    await sizing;

    // m2 is running but its create has not returned; m1 is done: the claim takes m1 without waiting.
    const c = await s.pools.claim({ template: 't', env: { REQ: 'x' }, labels: { owner: 'alice' }, timeoutMs: 60_000 }, 'runsc');
    assert.ok('rec' in c, JSON.stringify(c));
    assert.equal(c.rec.id, 'm1');
    assert.deepEqual(c.rec.spec.env, { FROM_TEMPLATE: '1', REQ: 'x' });
    assert.deepEqual(c.rec.labels, { owner: 'alice' });
    assert.equal(c.rec.spec.timeoutMs, 60_000);
    assert.ok(c.rec.expiresAt! > Date.now());
    assert.ok(s.events.some((e) => e.id === 'm1' && e.type === 'pool-claim'));
    assert.ok(s.events.some((e) => e.id === 'm1' && e.type === 'pool-ready'), 'the member warmed up before it counted as ready');
    v = s.pools.view(s.tmpl());
    assert.deepEqual([v.ready, v.starting, v.claims], [0, 1, 1], 'the claimed member left the pool');

    // The next claim takes m2 once its create returns (waiting is cheaper than a new restore).
    const next = s.pools.claim({ template: 't' }, 'runsc');
    s.finish('m2');
    const c2 = await next;
    assert.ok('rec' in c2 && c2.rec.id === 'm2', JSON.stringify(c2));

    // The refill's member still restoring: a claim waits for it rather than starting a sandbox of its own.
    await until('the refill starts a member', () => s.started.length === 3);
    s.mgr.restoring('m3');
    const third = s.pools.claim({ template: 't' }, 'runsc');
    s.finish('m3');
    const c3 = await third;
    assert.ok('rec' in c3 && c3.rec.id === 'm3', JSON.stringify(c3));
    s.pools.close();
  });

  it('the store finds pool members by label in SQL, by template or all', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordon-pool-unit-'));
    try {
      const db = openDatabase(join(dir, 'db.sqlite'));
      const store = new SandboxStore(db);
      const labels: Record<string, string>[] = [{ [POOL]: 'a' }, { [POOL]: 'b', owner: 'x' }, { owner: 'a' }, { [`${POOL}x`]: 'a' }, {}];
      labels.forEach((l, i) => store.insert({ id: `s${i}`, state: 'running', runtime: 'runsc', spec: { env: {} } as never, labels: l, createdAt: i, updatedAt: i }));
      assert.deepEqual(store.withLabel(POOL).map((r) => r.id), ['s0', 's1']);
      assert.deepEqual(store.withLabel(POOL, 'a').map((r) => r.id), ['s0']);
      assert.deepEqual(store.withLabel(POOL, 'c'), []);
      assert.deepEqual(store.withLabel('owner', 'a').map((r) => r.id), ['s2']);
      assert.throws(() => store.withLabel('a"b'));
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
