import type { DB } from './db.js';
import type { ImageConfig, SandboxSpec } from '../engine/types.js';
import type { RuntimeName } from '../config.js';

/** What a snapshot holds: 'memory' also has the runtime's checkpoint image; 'filesystem' only the layer. */
export type SnapshotKind = 'memory' | 'filesystem';

export interface SnapshotRecord {
  id: string;
  name?: string;
  /** The sandbox it was taken from (which may be gone since). */
  sourceSandbox: string;
  runtime: RuntimeName;
  kind: SnapshotKind;
  /** The source's spec at the time (resources, mounts, network): a restore must give the same again. */
  spec: SandboxSpec;
  /** Read-only layers, top-most first: this snapshot's own layer, then the source's lower layers. */
  lowerDirs: string[];
  /** Snapshots whose layers are among lowerDirs (the source was created from the first of them). */
  chain: string[];
  imageConfig: ImageConfig;
  sizeBytes: number;
  /** Taken for a fork: removed with its last user instead of listed for the user to remove. */
  autoRemove: boolean;
  /** The source's init ran the agent: a restore must give the same mounts and init again. */
  agent: boolean;
  /** The helper set (busybox, tini, agent) the source ran: a restore binds the same programs again. */
  helpers?: string;
  createdAt: number;
}

interface Row {
  id: string;
  name: string | null;
  source_sandbox: string;
  runtime: string;
  kind: string;
  spec: string;
  lower_dirs: string;
  chain: string;
  image_config: string;
  size_bytes: number;
  auto_remove: number;
  agent: number;
  helpers: string | null;
  created_at: number;
}

function fromRow(r: Row): SnapshotRecord {
  return {
    id: r.id,
    name: r.name ?? undefined,
    sourceSandbox: r.source_sandbox,
    runtime: r.runtime as RuntimeName,
    kind: r.kind as SnapshotKind,
    spec: JSON.parse(r.spec),
    lowerDirs: JSON.parse(r.lower_dirs),
    chain: JSON.parse(r.chain),
    imageConfig: JSON.parse(r.image_config),
    sizeBytes: r.size_bytes,
    autoRemove: !!r.auto_remove,
    agent: !!r.agent,
    helpers: r.helpers ?? undefined,
    createdAt: r.created_at,
  };
}

/** Snapshot records. The only module that writes SQL for snapshots. */
export class SnapshotStore {
  constructor(private readonly db: DB) {}

  /** Insert a snapshot; a name already in use moves to it (E2B's rule: the name points at the newest build). */
  insert(s: SnapshotRecord): void {
    this.db.transaction(() => {
      if (s.name) this.db.prepare('UPDATE snapshots SET name = NULL WHERE name = ?').run(s.name);
      this.db
        .prepare(
          `INSERT INTO snapshots (id, name, source_sandbox, runtime, kind, spec, lower_dirs, chain, image_config, size_bytes, auto_remove, agent, helpers, created_at)
           VALUES (@id, @name, @source, @runtime, @kind, @spec, @lowerDirs, @chain, @imageConfig, @size, @autoRemove, @agent, @helpers, @created)`,
        )
        .run({
          id: s.id,
          name: s.name ?? null,
          source: s.sourceSandbox,
          runtime: s.runtime,
          kind: s.kind,
          spec: JSON.stringify(s.spec),
          lowerDirs: JSON.stringify(s.lowerDirs),
          chain: JSON.stringify(s.chain),
          imageConfig: JSON.stringify(s.imageConfig),
          size: s.sizeBytes,
          autoRemove: s.autoRemove ? 1 : 0,
          agent: s.agent ? 1 : 0,
          helpers: s.helpers ?? null,
          created: s.createdAt,
        });
    })();
  }

  get(id: string): SnapshotRecord | undefined {
    const r = this.db.prepare('SELECT * FROM snapshots WHERE id = ?').get(id) as Row | undefined;
    return r ? fromRow(r) : undefined;
  }

  byName(name: string): SnapshotRecord | undefined {
    const r = this.db.prepare('SELECT * FROM snapshots WHERE name = ?').get(name) as Row | undefined;
    return r ? fromRow(r) : undefined;
  }

  /** Oldest first (id breaks ties, so paging by position is stable). */
  list(filter: { sourceSandbox?: string; includeAuto?: boolean } = {}): SnapshotRecord[] {
    const rows = this.db
      .prepare(
        `SELECT * FROM snapshots WHERE (@source IS NULL OR source_sandbox = @source) AND (@auto = 1 OR auto_remove = 0) ORDER BY created_at, id`,
      )
      .all({ source: filter.sourceSandbox ?? null, auto: filter.includeAuto ? 1 : 0 }) as Row[];
    return rows.map(fromRow);
  }

  delete(id: string): void {
    this.db.prepare('DELETE FROM snapshots WHERE id = ?').run(id);
  }
}
