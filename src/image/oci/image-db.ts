import type { DB } from '../../store/db.js';

export interface LayerRecord {
  /** Digest of the blob as stored in the registry or archive (compressed). */
  digest: string;
  diffId: string;
  size: number;
  mediaType?: string;
}

export interface ImageRecord {
  /** Canonical reference, e.g. 127.0.0.1:5000/app:1, or "sha256:<id>" for an untagged import. */
  name: string;
  /** Image ID: the digest of its config, as Docker shows it. */
  id: string;
  /** Manifest digest (what `name@digest` pins). */
  digest: string;
  manifest: string;
  config: string;
  layers: LayerRecord[];
  size: number;
  source: 'pull' | 'import';
  createdAt: number;
}

interface Row {
  name: string;
  id: string;
  digest: string;
  manifest: string;
  config: string;
  layers: string;
  size: number;
  source: string;
  created_at: number;
}

const fromRow = (r: Row): ImageRecord => ({
  name: r.name,
  id: r.id,
  digest: r.digest,
  manifest: r.manifest,
  config: r.config,
  layers: JSON.parse(r.layers),
  size: r.size,
  source: r.source as ImageRecord['source'],
  createdAt: r.created_at,
});

/** Image rows in SQLite. */
export class ImageDb {
  constructor(private readonly db: DB) {}

  put(img: ImageRecord): void {
    this.db
      .prepare(`INSERT INTO images (name, id, digest, manifest, config, layers, size, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET id=excluded.id, digest=excluded.digest, manifest=excluded.manifest, config=excluded.config,
                layers=excluded.layers, size=excluded.size, source=excluded.source, created_at=excluded.created_at`)
      .run(img.name, img.id, img.digest, img.manifest, img.config, JSON.stringify(img.layers), img.size, img.source, img.createdAt);
  }

  get(name: string): ImageRecord | undefined {
    const r = this.db.prepare('SELECT * FROM images WHERE name = ?').get(name) as Row | undefined;
    return r && fromRow(r);
  }

  list(): ImageRecord[] {
    return (this.db.prepare('SELECT * FROM images ORDER BY created_at DESC, name').all() as Row[]).map(fromRow);
  }

  /** Images whose ID starts with `prefix` (hex, with or without "sha256:") or whose manifest digest is it. */
  byId(prefix: string): ImageRecord[] {
    const p = prefix.startsWith('sha256:') ? prefix : `sha256:${prefix}`;
    return (this.db.prepare('SELECT * FROM images WHERE substr(id, 1, ?) = ? OR digest = ?').all(p.length, p, p) as Row[]).map(fromRow);
  }

  delete(name: string): void {
    this.db.prepare('DELETE FROM images WHERE name = ?').run(name);
  }
}
