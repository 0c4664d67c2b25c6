import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { BUILD_LIMITS, BuildRecords, type BuildLimits } from '../src/engine/templates/build-records.js';
import { openDatabase, type DB } from '../src/store/db.js';
import { TemplateBuildStore } from '../src/store/template-builds.js';

// Template build records in SQLite (one module, a real database file): log paging by offset and level,
// the per-build and total bounds, and what a restart makes of a build that was running.

const dir = mkdtempSync(join(tmpdir(), 'cordon-build-records-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

function open(limits: Partial<BuildLimits> = {}, path = join(dir, `db-${n++}.sqlite`)): { db: DB; records: BuildRecords; path: string } {
  const db = openDatabase(path);
  return { db, records: new BuildRecords(new TemplateBuildStore(db), { ...BUILD_LIMITS, ...limits }), path };
}

const req = (name: string) => ({ templateID: name, targets: [name], tags: ['default'] });

describe('build records', () => {
  it('pages log entries by offset (also among those of a level) and keeps them across a reopen', () => {
    const { db, records, path } = open();
    const b = records.request(req('web'));
    assert.equal(b.status, 'waiting');
    records.start(b.id);
    for (let i = 0; i < 5; i++) records.log(b.id, i === 3 ? 'warn' : 'info', `line-${i}`, '1');
    // Read before the flush timer: pending entries are written first.
    assert.deepEqual(records.page(b.id, 2, 100).map((e) => e.message), ['line-2', 'line-3', 'line-4']);
    assert.deepEqual(records.page(b.id, 0, 2).map((e) => e.message), ['line-0', 'line-1']);
    assert.deepEqual(records.page(b.id, 0, 100, 'warn').map((e) => e.message), ['line-3']);
    assert.deepEqual(records.page(b.id, 1, 100, 'warn'), []);
    records.log(b.id, 'error', 'it broke', '1', true);
    records.finish(b.id, 'error', { message: 'it broke', step: '1' });
    records.close();
    db.close();

    const again = open({}, path);
    const rec = again.records.get(b.id)!;
    assert.equal(rec.status, 'error');
    assert.equal(rec.reason!.message, 'it broke');
    assert.deepEqual(rec.reason!.logEntries.map((e) => e.message), ['line-0', 'line-1', 'line-2', 'line-3', 'line-4', 'it broke']);
    assert.deepEqual(again.records.page(b.id, 4, 100).map((e) => e.message), ['line-4', 'it broke']);
    assert.deepEqual(again.records.page(b.id, 6, 100), [], 'an empty page after the end');
    assert.equal(again.records.known('web'), true);
    assert.equal(again.records.known('other'), false);
    assert.throws(() => again.records.start(b.id), /started already/);
    again.db.close();
  });

  it('a build running when the daemon stopped reads as error after the restart, with its last step', () => {
    const { db, records, path } = open();
    const b = records.request(req('cut'));
    records.start(b.id);
    records.log(b.id, 'info', '[2] RUN sleep 600', '2');
    records.log(b.id, 'info', 'long-step-started', '2');
    records.close();
    db.close();

    const again = open({}, path);
    assert.equal(again.records.recoverInterrupted(), 1);
    const rec = again.records.get(b.id)!;
    assert.equal(rec.status, 'error');
    assert.equal(rec.reason!.step, '2');
    assert.match(rec.reason!.message, /daemon restarted while this build was running \(at step 2\).*start the build again/);
    assert.deepEqual(again.records.page(b.id, 0, 100).map((e) => e.level), ['info', 'info', 'error']);
    assert.deepEqual(rec.reason!.logEntries.map((e) => e.message).slice(0, 2), ['[2] RUN sleep 600', 'long-step-started']);
    assert.equal(again.records.recoverInterrupted(), 0, 'only once');
    again.db.close();
  });

  it('bounds: entries and bytes per build (the rest counted), builds kept, total log bytes, waiting builds expire', () => {
    const { db, records } = open({ maxBuilds: 3, maxLogEntries: 10, maxLogBytes: 1000, maxTotalLogBytes: 1500, waitingTtlMs: 60_000 });
    const b = records.request(req('flood'));
    records.start(b.id);
    for (let i = 0; i < 50; i++) records.log(b.id, 'info', `l${i}`);
    records.log(b.id, 'warn', 'lines were left out', undefined, true);
    assert.equal(records.get(b.id)!.dropped, 40);
    assert.equal(records.page(b.id, 0, 100).length, 11, 'ten lines and the note that always goes in');
    records.finish(b.id, 'ready');
    assert.throws(() => {
      const r = records.request(req('twice'));
      records.start(r.id);
      records.request(req('twice'));
    }, /being built already/);

    // Two builds of ~800 bytes each: the older goes once the total passes 1500.
    const big = [0, 1].map((i) => {
      const x = records.request(req(`big${i}`));
      records.start(x.id);
      records.log(x.id, 'info', 'y'.repeat(800));
      records.finish(x.id, 'ready');
      return x.id;
    });
    assert.equal(records.get(big[0]), undefined, 'pruned by total log bytes');
    assert.equal(records.get(big[1])!.status, 'ready');
    assert.equal(records.page(big[0], 0, 10).length, 0, 'its entries went with it');
    // Count: at most 3; the running "twice" build stays whatever its age.
    for (let i = 0; i < 4; i++) records.request(req(`w${i}`));
    const kept = (db.prepare('SELECT template_id FROM template_builds ORDER BY created_at, rowid').all() as { template_id: string }[]).map((k) => k.template_id);
    assert.deepEqual(kept, ['twice', 'w2', 'w3']);

    db.prepare("UPDATE template_builds SET created_at = created_at - 120000 WHERE template_id = 'w2'").run();
    assert.equal(records.known('w2'), true);
    records.request(req('w4'));
    assert.equal(records.known('w2'), false, 'a build waiting past its TTL is forgotten');
    assert.equal(records.known('w3'), true);
    db.close();
  });
});
