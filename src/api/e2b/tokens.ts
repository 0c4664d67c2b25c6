import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { DB } from '../../store/db.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Constant-time string comparison (hashing first makes the lengths equal). */
export function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/**
 * Per-sandbox envd access tokens. E2B's envd requires X-Access-Token on every call and signs
 * file URLs with it, so each sandbox gets one at create time (or on first connect for a
 * sandbox made through the native API). Rows of sandboxes that no longer exist are pruned lazily.
 */
export class EnvdTokens {
  private readonly cache = new Map<string, string>();

  constructor(private readonly db: DB) {}

  /** The sandbox's token, minting one if it has none yet. */
  issue(sandboxId: string): string {
    const known = this.get(sandboxId);
    if (known) return known;
    const token = randomBytes(24).toString('base64url');
    this.db.prepare('INSERT OR IGNORE INTO e2b_tokens (sandbox_id, envd_token, created_at) VALUES (?, ?, ?)').run(sandboxId, token, Date.now());
    this.cache.delete(sandboxId);
    return this.get(sandboxId)!;
  }

  get(sandboxId: string): string | undefined {
    const hit = this.cache.get(sandboxId);
    if (hit) return hit;
    const row = this.db.prepare('SELECT envd_token FROM e2b_tokens WHERE sandbox_id = ?').get(sandboxId) as { envd_token: string } | undefined;
    if (row) this.cache.set(sandboxId, row.envd_token);
    return row?.envd_token;
  }

  forget(sandboxId: string): void {
    this.cache.delete(sandboxId);
    this.db.prepare('DELETE FROM e2b_tokens WHERE sandbox_id = ?').run(sandboxId);
  }

  /** Drop tokens of sandboxes that are gone (expired, removed through the native API). */
  prune(): void {
    this.db.prepare('DELETE FROM e2b_tokens WHERE sandbox_id NOT IN (SELECT id FROM sandboxes)').run();
    this.cache.clear();
  }

  /** Every sandbox that has a token; used to find the sandbox a signed URL belongs to. */
  all(): { sandboxId: string; token: string }[] {
    return (this.db.prepare('SELECT sandbox_id, envd_token FROM e2b_tokens').all() as { sandbox_id: string; envd_token: string }[]).map((r) => ({
      sandboxId: r.sandbox_id,
      token: r.envd_token,
    }));
  }
}

/**
 * The signature envd accepts on /files URLs: "v1_" + unpadded base64 SHA-256 of
 * "path:operation:user:token[:expiration]" (the format the SDK's getSignature produces).
 */
export function fileSignature(path: string, operation: 'read' | 'write', user: string, token: string, expiration?: number): string {
  const raw = expiration === undefined ? `${path}:${operation}:${user}:${token}` : `${path}:${operation}:${user}:${token}:${expiration}`;
  return 'v1_' + createHash('sha256').update(raw).digest('base64').replace(/=+$/, '');
}
