import { EventEmitter } from 'node:events';
import type Database from 'better-sqlite3';
import type { DB } from './db.js';
import type { SandboxEvent, SandboxRecord, SandboxState } from '../engine/types.js';

interface Row {
  id: string;
  state: string;
  state_reason: string | null;
  runtime: string;
  config: string;
  labels: string;
  runtime_state: string | null;
  created_at: number;
  updated_at: number;
  started_at: number | null;
  expires_at: number | null;
}

function fromRow(r: Row): SandboxRecord {
  return {
    id: r.id,
    state: r.state as SandboxState,
    stateReason: r.state_reason ?? undefined,
    runtime: r.runtime as SandboxRecord['runtime'],
    spec: JSON.parse(r.config),
    labels: JSON.parse(r.labels),
    runtimeState: r.runtime_state ? JSON.parse(r.runtime_state) : undefined,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    startedAt: r.started_at ?? undefined,
    expiresAt: r.expires_at ?? undefined,
  };
}

interface EventRow {
  seq: number;
  sandbox_id: string;
  ts: number;
  type: string;
  message: string;
  data: string | null;
}

type NewEvent = Omit<SandboxEvent, 'seq'>;

/** Queued events are written together after this long, or as soon as this many wait. */
const BATCH_MS = 200;
const BATCH_MAX = 100;
/** Rows deleted per statement while pruning, so no single step holds the event loop for long. */
const PRUNE_CHUNK = 2000;

/**
 * Sandbox records and their event log. The only module that writes SQL for sandboxes.
 * Events go out on `feed` in seq order once written; queued (batched) events are written before any
 * other event, read or delete touches the log, so order holds across both paths.
 */
export class SandboxStore {
  /** Every event added, as it is added ('event', SandboxEvent): feeds the streaming endpoint. */
  readonly feed = new EventEmitter().setMaxListeners(0);
  private pending: NewEvent[] = [];
  private flushTimer?: NodeJS.Timeout;
  /** Events written per sandbox since its last prune; undefined until the first prune looks at all. */
  private written?: Set<string>;
  private getById?: Database.Statement;
  /**
   * Rows as last read, by id: every API call on a sandbox reads its row, and the query was a tenth of
   * the daemon's time on a small file operation. Every write here drops the row, so the next read
   * goes to the database; a row read inside a transaction is not kept (it may be rolled back).
   * Records are built from the row on each read, so callers never share an object.
   */
  private readonly rows = new Map<string, Row>();
  constructor(readonly db: DB) {}

  insert(rec: SandboxRecord): void {
    this.rows.delete(rec.id);
    this.db
      .prepare(
        `INSERT INTO sandboxes (id, state, state_reason, runtime, template, image, config, labels, runtime_state, created_at, updated_at, started_at, expires_at)
         VALUES (@id, @state, @reason, @runtime, @template, @image, @config, @labels, @runtimeState, @created, @updated, @started, @expires)`,
      )
      .run({
        id: rec.id,
        state: rec.state,
        reason: rec.stateReason ?? null,
        runtime: rec.runtime,
        template: rec.spec.template ?? null,
        image: rec.spec.image ?? null,
        config: JSON.stringify(rec.spec),
        labels: JSON.stringify(rec.labels),
        runtimeState: rec.runtimeState ? JSON.stringify(rec.runtimeState) : null,
        created: rec.createdAt,
        updated: rec.updatedAt,
        started: rec.startedAt ?? null,
        expires: rec.expiresAt ?? null,
      });
  }

  get(id: string): SandboxRecord | undefined {
    let r = this.rows.get(id);
    if (!r) {
      this.getById ??= this.db.prepare('SELECT * FROM sandboxes WHERE id = ?');
      r = this.getById.get(id) as Row | undefined;
      // Inside a transaction the row may yet be rolled back: not kept.
      if (r && !this.db.inTransaction) this.rows.set(id, r);
    }
    return r ? fromRow(r) : undefined;
  }

  list(): SandboxRecord[] {
    return (this.db.prepare('SELECT * FROM sandboxes ORDER BY created_at').all() as Row[]).map(fromRow);
  }

  /** Sandboxes carrying label `key` (with `value` when given), without reading every record (warm pools ask on each create). */
  withLabel(key: string, value?: string): SandboxRecord[] {
    if (!/^[A-Za-z0-9._/-]+$/.test(key)) throw new Error(`withLabel: unsupported label key ${key}`);
    const path = `$."${key}"`;
    const rows = value === undefined
      ? this.db.prepare('SELECT * FROM sandboxes WHERE json_extract(labels, ?) IS NOT NULL ORDER BY created_at').all(path)
      : this.db.prepare('SELECT * FROM sandboxes WHERE json_extract(labels, ?) = ? ORDER BY created_at').all(path, value);
    return (rows as Row[]).map(fromRow);
  }

  /** Sandboxes in any of `states`. */
  countIn(states: readonly SandboxState[]): number {
    const r = this.db.prepare(`SELECT COUNT(*) AS n FROM sandboxes WHERE state IN (SELECT value FROM json_each(?))`).get(JSON.stringify(states)) as { n: number };
    return r.n;
  }

  update(id: string, patch: Partial<Pick<SandboxRecord, 'state' | 'stateReason' | 'runtimeState' | 'startedAt' | 'expiresAt' | 'spec' | 'labels'>>): void {
    this.rows.delete(id);
    const sets: string[] = ['updated_at = @updated'];
    const params: Record<string, unknown> = { id, updated: Date.now() };
    if ('state' in patch) (sets.push('state = @state'), (params.state = patch.state));
    if ('stateReason' in patch) (sets.push('state_reason = @reason'), (params.reason = patch.stateReason ?? null));
    if ('runtimeState' in patch) (sets.push('runtime_state = @runtimeState'), (params.runtimeState = patch.runtimeState ? JSON.stringify(patch.runtimeState) : null));
    if ('startedAt' in patch) (sets.push('started_at = @started'), (params.started = patch.startedAt ?? null));
    if ('expiresAt' in patch) (sets.push('expires_at = @expires'), (params.expires = patch.expiresAt ?? null));
    if ('spec' in patch) (sets.push('config = @config'), (params.config = JSON.stringify(patch.spec)));
    if ('labels' in patch) (sets.push('labels = @labels'), (params.labels = JSON.stringify(patch.labels ?? {})));
    this.db.prepare(`UPDATE sandboxes SET ${sets.join(', ')} WHERE id = @id`).run(params);
  }

  delete(id: string): void {
    this.rows.delete(id);
    this.flush();
    this.written?.delete(id);
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM sandboxes WHERE id = ?').run(id);
      this.db.prepare('DELETE FROM events WHERE sandbox_id = ?').run(id);
    })();
  }

  addEvent(sandboxId: string, type: string, message: string, data?: Record<string, unknown>): SandboxEvent {
    this.flush();
    return this.write([{ sandboxId, ts: Date.now(), type, message, data }])[0];
  }

  /** Add an event in the next batch (one transaction per BATCH_MS or BATCH_MAX): for frequent ones such as network events. */
  queueEvent(sandboxId: string, type: string, message: string, data?: Record<string, unknown>): void {
    this.pending.push({ sandboxId, ts: Date.now(), type, message, data });
    if (this.pending.length >= BATCH_MAX) this.flush();
    else if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => this.flush(), BATCH_MS);
      this.flushTimer.unref();
    }
  }

  /** Write queued events now. */
  flush(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (!this.pending.length) return;
    const batch = this.pending;
    this.pending = [];
    this.write(batch);
  }

  private write(batch: NewEvent[]): SandboxEvent[] {
    const insert = this.db.prepare('INSERT INTO events (sandbox_id, ts, type, message, data) VALUES (?, ?, ?, ?, ?)');
    const written = this.db.transaction(() =>
      batch.map((e) => ({ ...e, seq: Number(insert.run(e.sandboxId, e.ts, e.type, e.message, e.data ? JSON.stringify(e.data) : null).lastInsertRowid) })),
    )();
    for (const ev of written) {
      this.written?.add(ev.sandboxId);
      this.feed.emit('event', ev);
    }
    return written;
  }

  /**
   * Retention: keep the newest `keep` events of each sandbox (0 = all) and none older than `maxAgeMs`
   * (0 = no limit). Deletes in chunks and yields between them. Returns how many events went.
   */
  async pruneEvents(keep: number, maxAgeMs: number, now = Date.now()): Promise<number> {
    this.flush();
    let removed = 0;
    if (keep > 0) {
      const ids = this.written ?? new Set((this.db.prepare('SELECT DISTINCT sandbox_id AS id FROM events').all() as { id: string }[]).map((r) => r.id));
      this.written = new Set();
      const cutoff = this.db.prepare('SELECT seq FROM events WHERE sandbox_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?');
      const chunk = this.db.prepare('DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE sandbox_id = ? AND seq <= ? ORDER BY seq LIMIT ?)');
      for (const id of ids) {
        const last = cutoff.get(id, keep) as { seq: number } | undefined;
        if (last) removed += await chunked(() => chunk.run(id, last.seq, PRUNE_CHUNK).changes);
      }
    }
    if (maxAgeMs > 0) {
      const old = this.db.prepare('DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE ts < ? LIMIT ?)');
      removed += await chunked(() => old.run(now - maxAgeMs, PRUNE_CHUNK).changes);
    }
    return removed;
  }

  events(sandboxId: string, afterSeq = 0, limit = 1000): SandboxEvent[] {
    this.flush();
    const rows = this.db
      .prepare('SELECT * FROM events WHERE sandbox_id = ? AND seq > ? ORDER BY seq LIMIT ?')
      .all(sandboxId, afterSeq, limit) as EventRow[];
    return rows.map((r) => ({
      seq: r.seq,
      sandboxId: r.sandbox_id,
      ts: r.ts,
      type: r.type,
      message: r.message,
      data: r.data ? JSON.parse(r.data) : undefined,
    }));
  }
}

/** Run a chunk-deleting statement until it deletes less than a full chunk, yielding in between. */
async function chunked(step: () => number): Promise<number> {
  let total = 0;
  for (;;) {
    const n = step();
    total += n;
    if (n < PRUNE_CHUNK) return total;
    await new Promise((r) => setImmediate(r));
  }
}
