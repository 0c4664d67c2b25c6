import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { DB } from '../../store/db.js';
import { E2bStore, type E2bRow } from '../../store/e2b.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Constant-time string comparison (hashing first makes the lengths equal). */
export function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

export const newToken = () => randomBytes(24).toString('base64url');

/** Create options E2B reports back; cordon stores them and acts on the ones it supports. */
export interface E2bOptions {
  /** Stored and otherwise ignored: the SDK starts the MCP gateway itself through commands. */
  mcp?: unknown;
  /** false: sandbox ports need the traffic access token (E2B's default is true). */
  allowPublicTraffic?: boolean;
  /** Host header sent to sandbox ports; "${PORT}" becomes the port. */
  maskRequestHost?: string;
  autoPause?: boolean;
  autoPauseMemory?: boolean;
  /** A paused sandbox is resumed by traffic to it. */
  autoResume?: boolean;
}

export interface E2bSandbox {
  envdToken: string;
  trafficToken?: string;
  options: E2bOptions;
}

/**
 * Per-sandbox E2B state. E2B's envd requires X-Access-Token on every call and signs file URLs with
 * it, so each sandbox gets one at create time (or on first connect for a sandbox made through the
 * native API); a traffic token when its ports are not public; the create options. Rows of sandboxes
 * that no longer exist are pruned lazily.
 */
export class EnvdTokens {
  private readonly cache = new Map<string, E2bRow>();
  private readonly store: E2bStore;

  constructor(db: DB) {
    this.store = new E2bStore(db);
  }

  /** The sandbox's envd token, minting one (and recording traffic token and options) if it has none yet. */
  issue(sandboxId: string, extra: { trafficToken?: string; options?: E2bOptions } = {}): string {
    const known = this.get(sandboxId);
    if (known) return known;
    this.store.insert({ sandboxId, envdToken: newToken(), trafficToken: extra.trafficToken, options: { ...extra.options } });
    this.cache.delete(sandboxId);
    return this.get(sandboxId)!;
  }

  private row(sandboxId: string): E2bRow | undefined {
    const hit = this.cache.get(sandboxId);
    if (hit) return hit;
    const row = this.store.get(sandboxId);
    if (row) this.cache.set(sandboxId, row);
    return row;
  }

  get(sandboxId: string): string | undefined {
    return this.row(sandboxId)?.envdToken;
  }

  /** Everything E2B keeps for the sandbox, if it has been seen through the E2B API. */
  sandbox(sandboxId: string): E2bSandbox | undefined {
    const r = this.row(sandboxId);
    return r && { envdToken: r.envdToken, trafficToken: r.trafficToken, options: r.options as E2bOptions };
  }

  forget(sandboxId: string): void {
    this.cache.delete(sandboxId);
    this.store.delete(sandboxId);
  }

  /** Drop tokens of sandboxes that are gone (expired, removed through the native API). */
  prune(): void {
    this.store.prune();
    this.cache.clear();
  }

  /** Every sandbox that has a token; used to find the sandbox a signed URL belongs to. */
  all(): { sandboxId: string; token: string }[] {
    return this.store.all().map((r) => ({ sandboxId: r.sandboxId, token: r.envdToken }));
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
