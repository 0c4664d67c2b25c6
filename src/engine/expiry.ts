import type { SandboxStore } from '../store/sandboxes.js';

const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 5 * 60_000;

/**
 * One timer per sandbox with a timeout. At expiry the sandbox is removed; when that fails (a wedged
 * runtime), removal is tried again with backoff (1 s, doubling, at most 5 min) until it succeeds,
 * the sandbox is gone, or someone sets a new timeout.
 */
export class ExpiryTimers {
  private readonly timers = new Map<string, NodeJS.Timeout>();

  constructor(
    private readonly store: SandboxStore,
    private readonly remove: (id: string) => Promise<void>,
  ) {}

  schedule(id: string, expiresAt: number | undefined): void {
    this.cancel(id);
    if (!expiresAt) return;
    // setTimeout caps at ~24.8 days; the max sandbox timeout is far below that.
    this.arm(id, Math.max(0, expiresAt - Date.now()), 0);
  }

  cancel(id: string): void {
    const t = this.timers.get(id);
    if (t) clearTimeout(t);
    this.timers.delete(id);
  }

  private arm(id: string, delayMs: number, attempt: number): void {
    const t = setTimeout(() => void this.expire(id, attempt).catch(() => {}), delayMs);
    t.unref();
    this.timers.set(id, t);
  }

  private async expire(id: string, attempt: number): Promise<void> {
    this.timers.delete(id);
    const rec = this.store.get(id);
    if (!rec || !rec.expiresAt || rec.expiresAt > Date.now() + 50) return;
    try {
      await this.remove(id);
    } catch (e) {
      if (!this.store.get(id)?.expiresAt || this.timers.has(id)) return; // gone, or a new timeout was set
      const delay = Math.min(RETRY_FIRST_MS * 2 ** attempt, RETRY_MAX_MS);
      this.store.addEvent(id, 'error', `removing the expired sandbox failed (${(e as Error).message}); retrying in ${Math.round(delay / 1000)}s`);
      this.arm(id, delay, attempt + 1);
    }
  }
}
