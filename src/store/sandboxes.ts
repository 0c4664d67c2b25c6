import { EventEmitter } from 'node:events';
import type { DB } from './db.js';
import type { SandboxEvent, SandboxRecord, SandboxState } from '../engine/types.js';

interface Row {
  id: string;
  state: string;
  state_reason: string | null;
  runtime: string;
  config: string;
  labels: string;
  init_pid: number | null;
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
    initPid: r.init_pid ?? undefined,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    startedAt: r.started_at ?? undefined,
    expiresAt: r.expires_at ?? undefined,
  };
}

/** Sandbox records and their event log. The only module that writes SQL for sandboxes. */
export class SandboxStore {
  /** Every event added, as it is added ('event', SandboxEvent): feeds the streaming endpoint. */
  readonly feed = new EventEmitter().setMaxListeners(0);
  constructor(readonly db: DB) {}

  insert(rec: SandboxRecord): void {
    this.db
      .prepare(
        `INSERT INTO sandboxes (id, state, state_reason, runtime, template, image, config, labels, init_pid, created_at, updated_at, started_at, expires_at)
         VALUES (@id, @state, @reason, @runtime, @template, @image, @config, @labels, @pid, @created, @updated, @started, @expires)`,
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
        pid: rec.initPid ?? null,
        created: rec.createdAt,
        updated: rec.updatedAt,
        started: rec.startedAt ?? null,
        expires: rec.expiresAt ?? null,
      });
  }

  get(id: string): SandboxRecord | undefined {
    const r = this.db.prepare('SELECT * FROM sandboxes WHERE id = ?').get(id) as Row | undefined;
    return r ? fromRow(r) : undefined;
  }

  list(): SandboxRecord[] {
    return (this.db.prepare('SELECT * FROM sandboxes ORDER BY created_at').all() as Row[]).map(fromRow);
  }

  countLive(): number {
    const r = this.db.prepare(`SELECT COUNT(*) AS n FROM sandboxes WHERE state IN ('creating','running','paused')`).get() as { n: number };
    return r.n;
  }

  update(id: string, patch: Partial<Pick<SandboxRecord, 'state' | 'stateReason' | 'initPid' | 'startedAt' | 'expiresAt' | 'spec'>>): void {
    const sets: string[] = ['updated_at = @updated'];
    const params: Record<string, unknown> = { id, updated: Date.now() };
    if ('state' in patch) (sets.push('state = @state'), (params.state = patch.state));
    if ('stateReason' in patch) (sets.push('state_reason = @reason'), (params.reason = patch.stateReason ?? null));
    if ('initPid' in patch) (sets.push('init_pid = @pid'), (params.pid = patch.initPid ?? null));
    if ('startedAt' in patch) (sets.push('started_at = @started'), (params.started = patch.startedAt ?? null));
    if ('expiresAt' in patch) (sets.push('expires_at = @expires'), (params.expires = patch.expiresAt ?? null));
    if ('spec' in patch) (sets.push('config = @config'), (params.config = JSON.stringify(patch.spec)));
    this.db.prepare(`UPDATE sandboxes SET ${sets.join(', ')} WHERE id = @id`).run(params);
  }

  delete(id: string): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM sandboxes WHERE id = ?').run(id);
      this.db.prepare('DELETE FROM events WHERE sandbox_id = ?').run(id);
    })();
  }

  addEvent(sandboxId: string, type: string, message: string, data?: Record<string, unknown>): SandboxEvent {
    const ts = Date.now();
    const info = this.db
      .prepare('INSERT INTO events (sandbox_id, ts, type, message, data) VALUES (?, ?, ?, ?, ?)')
      .run(sandboxId, ts, type, message, data ? JSON.stringify(data) : null);
    const ev: SandboxEvent = { seq: Number(info.lastInsertRowid), sandboxId, ts, type, message, data };
    this.feed.emit('event', ev);
    return ev;
  }

  events(sandboxId: string, afterSeq = 0, limit = 1000): SandboxEvent[] {
    const rows = this.db
      .prepare('SELECT * FROM events WHERE sandbox_id = ? AND seq > ? ORDER BY seq LIMIT ?')
      .all(sandboxId, afterSeq, limit) as { seq: number; sandbox_id: string; ts: number; type: string; message: string; data: string | null }[];
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
