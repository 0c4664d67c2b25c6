import type { DB } from './db.js';

/** What the E2B surface keeps per sandbox: its envd token, its traffic token and its create options. */
export interface E2bRow {
  sandboxId: string;
  envdToken: string;
  trafficToken?: string;
  /** Options as JSON; their meaning belongs to the E2B surface. */
  options: Record<string, unknown>;
}

interface Row {
  sandbox_id: string;
  envd_token: string;
  traffic_token: string | null;
  options: string;
}

const fromRow = (r: Row): E2bRow => ({ sandboxId: r.sandbox_id, envdToken: r.envd_token, trafficToken: r.traffic_token ?? undefined, options: JSON.parse(r.options) });

/** Rows of the E2B surface (table e2b_tokens). The only module that writes SQL for them. */
export class E2bStore {
  constructor(private readonly db: DB) {}

  get(sandboxId: string): E2bRow | undefined {
    const r = this.db.prepare('SELECT sandbox_id, envd_token, traffic_token, options FROM e2b_tokens WHERE sandbox_id = ?').get(sandboxId) as Row | undefined;
    return r && fromRow(r);
  }

  /** Insert unless the sandbox has a row already (the first token stays). */
  insert(row: E2bRow): void {
    this.db
      .prepare('INSERT OR IGNORE INTO e2b_tokens (sandbox_id, envd_token, traffic_token, options, created_at) VALUES (?, ?, ?, ?, ?)')
      .run(row.sandboxId, row.envdToken, row.trafficToken ?? null, JSON.stringify(row.options), Date.now());
  }

  delete(sandboxId: string): void {
    this.db.prepare('DELETE FROM e2b_tokens WHERE sandbox_id = ?').run(sandboxId);
  }

  /** Drop rows of sandboxes that no longer exist. */
  prune(): void {
    this.db.prepare('DELETE FROM e2b_tokens WHERE sandbox_id NOT IN (SELECT id FROM sandboxes)').run();
  }

  all(): E2bRow[] {
    return (this.db.prepare('SELECT sandbox_id, envd_token, traffic_token, options FROM e2b_tokens').all() as Row[]).map(fromRow);
  }
}
