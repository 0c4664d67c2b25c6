import type { DB } from './db.js';

/** A named volume as stored. */
export interface VolumeRecord {
  id: string;
  name: string;
  sizeBytes: number;
  /** E2B volume token (Bearer for the content API). */
  token: string;
  labels: Record<string, string>;
  createdAt: number;
}

interface Row {
  id: string;
  name: string;
  size_bytes: number;
  token: string;
  labels: string;
  created_at: number;
}

const fromRow = (r: Row): VolumeRecord => ({ id: r.id, name: r.name, sizeBytes: r.size_bytes, token: r.token, labels: JSON.parse(r.labels), createdAt: r.created_at });
const COLUMNS = 'id, name, size_bytes, token, labels, created_at';

/** Rows of the volumes table. The only module that writes SQL for volumes. */
export class VolumeStore {
  constructor(private readonly db: DB) {}

  insert(v: VolumeRecord): void {
    this.db
      .prepare(`INSERT INTO volumes (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)`)
      .run(v.id, v.name, v.sizeBytes, v.token, JSON.stringify(v.labels), v.createdAt);
  }

  /** By id or by name. */
  find(ref: string): VolumeRecord | undefined {
    const r = this.db.prepare(`SELECT ${COLUMNS} FROM volumes WHERE id = ? OR name = ?`).get(ref, ref) as Row | undefined;
    return r && fromRow(r);
  }

  list(): VolumeRecord[] {
    return (this.db.prepare(`SELECT ${COLUMNS} FROM volumes ORDER BY created_at, name`).all() as Row[]).map(fromRow);
  }

  delete(id: string): void {
    this.db.prepare('DELETE FROM volumes WHERE id = ?').run(id);
  }
}
