import type { DB } from './db.js';

export type BuildStatus = 'waiting' | 'building' | 'ready' | 'error';
export type BuildLogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface BuildLogEntry {
  timestamp: string;
  level: BuildLogLevel;
  message: string;
  step?: string;
}

/** A template build as E2B's getBuildStatus reports it (its log entries are stored apart, numbered from 0). */
export interface BuildRecord {
  id: string;
  /** E2B's template id: the template's name. */
  templateID: string;
  /** The cordon template names the build makes: the first is built, the others are its tags. */
  targets: string[];
  tags: string[];
  cpuCount?: number;
  memoryMB?: number;
  status: BuildStatus;
  reason?: { message: string; step?: string; logEntries: BuildLogEntry[] };
  /** Log entries kept (the next one's number), their message bytes, and lines left out past the limits. */
  logCount: number;
  logBytes: number;
  dropped: number;
  /** The step of the newest log entry that named one (where an interrupted build stopped). */
  step?: string;
  createdAt: number;
  finishedAt?: number;
}

export interface BuildSummary {
  id: string;
  status: BuildStatus;
  logBytes: number;
  createdAt: number;
}

type LogRow = { ts: number; level: BuildLogLevel; message: string; step: string | null };
const entryOf = (r: LogRow): BuildLogEntry => ({ timestamp: new Date(r.ts).toISOString(), level: r.level, message: r.message, ...(r.step !== null ? { step: r.step } : {}) });

/** Template build records and their log entries in SQLite. */
export class TemplateBuildStore {
  constructor(private readonly db: DB) {}

  get(id: string): BuildRecord | undefined {
    const r = this.db.prepare('SELECT doc FROM template_builds WHERE id = ?').get(id) as { doc: string } | undefined;
    return r && (JSON.parse(r.doc) as BuildRecord);
  }

  put(rec: BuildRecord): void {
    this.db
      .prepare('INSERT INTO template_builds (id, template_id, status, doc, log_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET status = excluded.status, doc = excluded.doc, log_bytes = excluded.log_bytes')
      .run(rec.id, rec.templateID, rec.status, JSON.stringify(rec), rec.logBytes, rec.createdAt);
  }

  /** Add log entries numbered from `firstSeq` and save the record with them, in one transaction. */
  append(rec: BuildRecord, firstSeq: number, entries: BuildLogEntry[]): void {
    const ins = this.db.prepare('INSERT INTO template_build_logs (build_id, seq, ts, level, message, step) VALUES (?, ?, ?, ?, ?, ?)');
    this.db.transaction(() => {
      entries.forEach((e, i) => ins.run(rec.id, firstSeq + i, Date.parse(e.timestamp), e.level, e.message, e.step ?? null));
      this.put(rec);
    })();
  }

  withStatus(status: BuildStatus): BuildRecord[] {
    return (this.db.prepare('SELECT doc FROM template_builds WHERE status = ? ORDER BY created_at, rowid').all(status) as { doc: string }[]).map((r) => JSON.parse(r.doc) as BuildRecord);
  }

  hasTemplate(templateID: string): boolean {
    return !!this.db.prepare('SELECT 1 FROM template_builds WHERE template_id = ? LIMIT 1').get(templateID);
  }

  /** Entries from `offset` (counted among those of `levels`, when given), in order. */
  logs(id: string, offset: number, limit: number, levels?: BuildLogLevel[]): BuildLogEntry[] {
    const rows = levels
      ? this.db.prepare(`SELECT ts, level, message, step FROM template_build_logs WHERE build_id = ? AND level IN (${levels.map(() => '?').join(',')}) ORDER BY seq LIMIT ? OFFSET ?`).all(id, ...levels, limit, offset)
      : this.db.prepare('SELECT ts, level, message, step FROM template_build_logs WHERE build_id = ? AND seq >= ? ORDER BY seq LIMIT ?').all(id, offset, limit);
    return (rows as LogRow[]).map(entryOf);
  }

  /** The newest `n` entries of one step, oldest first. */
  stepTail(id: string, step: string, n: number): BuildLogEntry[] {
    const rows = this.db.prepare('SELECT ts, level, message, step FROM template_build_logs WHERE build_id = ? AND step = ? ORDER BY seq DESC LIMIT ?').all(id, step, n) as LogRow[];
    return rows.reverse().map(entryOf);
  }

  /** Every build, oldest first, as pruning needs it. */
  summaries(): BuildSummary[] {
    return (this.db.prepare('SELECT id, status, log_bytes, created_at FROM template_builds ORDER BY created_at, rowid').all() as { id: string; status: BuildStatus; log_bytes: number; created_at: number }[]).map((r) => ({
      id: r.id,
      status: r.status,
      logBytes: r.log_bytes,
      createdAt: r.created_at,
    }));
  }

  delete(ids: string[]): void {
    const logs = this.db.prepare('DELETE FROM template_build_logs WHERE build_id = ?');
    const rec = this.db.prepare('DELETE FROM template_builds WHERE id = ?');
    this.db.transaction(() => {
      for (const id of ids) {
        logs.run(id);
        rec.run(id);
      }
    })();
  }
}
