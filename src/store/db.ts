import Database from 'better-sqlite3';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';

export type DB = Database.Database;

/** Schema steps in order; `PRAGMA user_version` counts those applied (exported for the migration test). */
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE sandboxes (
     id TEXT PRIMARY KEY,
     state TEXT NOT NULL,
     state_reason TEXT,
     runtime TEXT NOT NULL,
     template TEXT,
     image TEXT,
     config TEXT NOT NULL,
     labels TEXT NOT NULL DEFAULT '{}',
     init_pid INTEGER,
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL,
     started_at INTEGER,
     expires_at INTEGER
   );
   CREATE TABLE events (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     sandbox_id TEXT NOT NULL,
     ts INTEGER NOT NULL,
     type TEXT NOT NULL,
     message TEXT NOT NULL,
     data TEXT
   );
   CREATE INDEX events_sandbox ON events(sandbox_id, seq);
   CREATE TABLE templates (
     name TEXT PRIMARY KEY,
     recipe_hash TEXT NOT NULL,
     rootfs TEXT NOT NULL,
     config TEXT NOT NULL,
     built_at INTEGER NOT NULL
   );`,
  // E2B surface: the per-sandbox envd access token (X-Access-Token, signed file URLs).
  `CREATE TABLE e2b_tokens (
     sandbox_id TEXT PRIMARY KEY,
     envd_token TEXT NOT NULL,
     created_at INTEGER NOT NULL
   );`,
  // OCI images (src/image/oci): one row per name; layers live unpacked on disk, keyed by diff ID.
  `CREATE TABLE images (
     name TEXT PRIMARY KEY,
     id TEXT NOT NULL,
     digest TEXT NOT NULL,
     manifest TEXT NOT NULL,
     config TEXT NOT NULL,
     layers TEXT NOT NULL,
     size INTEGER NOT NULL,
     source TEXT NOT NULL,
     created_at INTEGER NOT NULL
   );
   CREATE INDEX images_id ON images(id);`,
  // E2B surface: the traffic access token (sandbox ports when public traffic is off) and the create
  // options E2B reports back (mcp, allowPublicTraffic, maskRequestHost, autoPause*, autoResume).
  `ALTER TABLE e2b_tokens ADD COLUMN traffic_token TEXT;
   ALTER TABLE e2b_tokens ADD COLUMN options TEXT NOT NULL DEFAULT '{}';`,
  // Event retention prunes by age.
  `CREATE INDEX events_ts ON events(ts);`,
  // The runtime's opaque state of a running container replaces the init's host pid; an OCI backend
  // reads a state that holds only the pid (rows of older daemons) as it always read init_pid.
  `ALTER TABLE sandboxes ADD COLUMN runtime_state TEXT;
   UPDATE sandboxes SET runtime_state = json_object('pid', init_pid) WHERE init_pid IS NOT NULL;
   ALTER TABLE sandboxes DROP COLUMN init_pid;`,
  // Named volumes (src/engine/volumes.ts): each one a loop-mounted ext4 image under DATA/volumes/<id>;
  // `token` is the E2B volume token that authorises the content API.
  `CREATE TABLE volumes (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     size_bytes INTEGER NOT NULL,
     token TEXT NOT NULL,
     labels TEXT NOT NULL DEFAULT '{}',
     created_at INTEGER NOT NULL
   );`,
  // Snapshots (src/engine/snapshots.ts): a layer copied from a sandbox's upper over its lower layers,
  // and, where the runtime has memory checkpoints, its checkpoint image. `chain` lists the snapshots
  // whose layers lie below this one's (they must stay while it does).
  `CREATE TABLE snapshots (
     id TEXT PRIMARY KEY,
     name TEXT UNIQUE,
     source_sandbox TEXT NOT NULL,
     runtime TEXT NOT NULL,
     kind TEXT NOT NULL,
     spec TEXT NOT NULL,
     lower_dirs TEXT NOT NULL,
     chain TEXT NOT NULL,
     image_config TEXT NOT NULL,
     size_bytes INTEGER NOT NULL,
     auto_remove INTEGER NOT NULL DEFAULT 0,
     agent INTEGER NOT NULL DEFAULT 0,
     created_at INTEGER NOT NULL
   );
   CREATE INDEX snapshots_source ON snapshots(source_sandbox, created_at);`,
  // Templates built from a Dockerfile (src/engine/templates): each step's result is a layer directory;
  // cache_key is the content hash of the step, its inputs and its parent layer.
  `CREATE TABLE template_layers (
     id TEXT PRIMARY KEY,
     cache_key TEXT NOT NULL,
     parent TEXT,
     created_at INTEGER NOT NULL
   );
   CREATE INDEX template_layers_key ON template_layers(cache_key, created_at);
   CREATE TABLE built_templates (
     name TEXT PRIMARY KEY,
     doc TEXT NOT NULL,
     created_at INTEGER NOT NULL
   );`,
  // Template builds as E2B's getBuildStatus pages them (src/engine/templates/build-records.ts): the
  // record (targets, tags, reason) as a document, its log entries numbered from 0 for logsOffset.
  `CREATE TABLE template_builds (
     id TEXT PRIMARY KEY,
     template_id TEXT NOT NULL,
     status TEXT NOT NULL,
     doc TEXT NOT NULL,
     log_bytes INTEGER NOT NULL DEFAULT 0,
     created_at INTEGER NOT NULL
   );
   CREATE INDEX template_builds_created ON template_builds(created_at);
   CREATE INDEX template_builds_template ON template_builds(template_id);
   CREATE TABLE template_build_logs (
     build_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     ts INTEGER NOT NULL,
     level TEXT NOT NULL,
     message TEXT NOT NULL,
     step TEXT,
     PRIMARY KEY (build_id, seq)
   ) WITHOUT ROWID;`,
  // The helper programs (src/engine/helper-sets.ts) a memory snapshot's processes run: a restore
  // binds the same files again. NULL for snapshots taken before it was recorded.
  `ALTER TABLE snapshots ADD COLUMN helpers TEXT;`,
];

/** Open (and migrate) the daemon's SQLite database. WAL keeps readers off the writer's back. */
export function openDatabase(path: string): DB {
  mkdirSync(dirname(path), { recursive: true });
  // Owner-only (it holds secret values and access tokens); SQLite gives the -wal and -shm files
  // the database file's mode, so that one is created 0600 before SQLite opens it.
  if (!existsSync(path)) closeSync(openSync(path, 'a', 0o600));
  chmodSync(path, 0o600);
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  for (const f of [`${path}-wal`, `${path}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  const version = db.pragma('user_version', { simple: true }) as number;
  for (let v = version; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  return db;
}
