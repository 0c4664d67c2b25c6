import type { DB } from './db.js';
import type { ImageConfig } from '../engine/types.js';

/** What a template's own layers sit on. */
export type TemplateBase =
  | { kind: 'base' }
  /** An OCI image, pinned by its layers' diff IDs so a re-pull or untag never changes the template. */
  | { kind: 'image'; ref: string; id: string; diffIds: string[] };

/** A template built from a Dockerfile, as stored. */
export interface TemplateRecord {
  name: string;
  base: TemplateBase;
  /** The template FROM named, when it was another template (its removal is refused while this exists). */
  parentTemplate?: string;
  /** Layer ids bottom to top (a parent template's layers first). */
  layers: string[];
  config: ImageConfig;
  /** EXPOSE, recorded as written ("8080/tcp"). */
  exposed: string[];
  labels: Record<string, string>;
  /** Run in the background in every sandbox of the template; create waits until readyCmd exits 0. */
  startCmd?: string;
  readyCmd?: string;
  readyTimeoutMs?: number;
  cpus?: number;
  memoryBytes?: number;
  /** The memory snapshot taken with the start command's service up (runtimes that checkpoint memory). */
  snapshot?: string;
  /** How many started, unclaimed sandboxes of it the daemon keeps (its warm pool). */
  warm?: number;
  /**
   * How many of those members wait in a network namespace that reaches nothing, for creates with a
   * network policy (the others have no namespace, for creates without one). At most `warm`.
   */
  warmNetwork?: number;
  dockerfile: string;
  createdAt: number;
}

/** How many of a template's warm members wait in a network namespace (its `warmNetwork`, at most `warm`). */
export function warmNetworkOf(t: Pick<TemplateRecord, 'warm' | 'warmNetwork'> | undefined, size = t?.warm ?? 0): number {
  return Math.min(size, t?.warmNetwork ?? 0);
}

/** The record with a warm pool of `size` members, `network` of them networked (none at size 0). */
export function withWarmPool(t: TemplateRecord, size: number, network: number): TemplateRecord {
  const { warm: _warm, warmNetwork: _net, ...rest } = t;
  return size > 0 ? { ...rest, warm: size, ...(network ? { warmNetwork: network } : {}) } : rest;
}

export interface LayerRow {
  id: string;
  cacheKey: string;
  parent?: string;
  createdAt: number;
}

/** Built templates and their step cache in SQLite. */
export class TemplateStore {
  constructor(private readonly db: DB) {}

  get(name: string): TemplateRecord | undefined {
    const r = this.db.prepare('SELECT doc FROM built_templates WHERE name = ?').get(name) as { doc: string } | undefined;
    return r && (JSON.parse(r.doc) as TemplateRecord);
  }

  list(): TemplateRecord[] {
    return (this.db.prepare('SELECT doc FROM built_templates ORDER BY created_at DESC, name').all() as { doc: string }[]).map((r) => JSON.parse(r.doc) as TemplateRecord);
  }

  put(t: TemplateRecord): void {
    this.db
      .prepare('INSERT INTO built_templates (name, doc, created_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET doc = excluded.doc, created_at = excluded.created_at')
      .run(t.name, JSON.stringify(t), t.createdAt);
  }

  delete(name: string): void {
    this.db.prepare('DELETE FROM built_templates WHERE name = ?').run(name);
  }

  /** The newest layer made for this cache key. */
  layerFor(cacheKey: string): LayerRow | undefined {
    const r = this.db.prepare('SELECT * FROM template_layers WHERE cache_key = ? ORDER BY created_at DESC LIMIT 1').get(cacheKey) as
      | { id: string; cache_key: string; parent: string | null; created_at: number }
      | undefined;
    return r && { id: r.id, cacheKey: r.cache_key, parent: r.parent ?? undefined, createdAt: r.created_at };
  }

  putLayer(l: LayerRow): void {
    this.db.prepare('INSERT INTO template_layers (id, cache_key, parent, created_at) VALUES (?, ?, ?, ?)').run(l.id, l.cacheKey, l.parent ?? null, l.createdAt);
  }

  layerIds(): string[] {
    return (this.db.prepare('SELECT id FROM template_layers').all() as { id: string }[]).map((r) => r.id);
  }

  deleteLayer(id: string): void {
    this.db.prepare('DELETE FROM template_layers WHERE id = ?').run(id);
  }
}
