import { readFileSync, writeFileSync } from 'node:fs';
import type { Pin } from './resolver.js';

/**
 * Pinned DNS answers of one sandbox, kept on disk so a restart does not reopen DNS rebinding. Saved
 * at most once a second: a sandbox resolving endless names must not make the daemon rewrite the file
 * synchronously for every answer. A crash loses at most that last second of pins.
 */
export class SavedPins extends Map<string, Pin> {
  private file?: string;
  private timer?: NodeJS.Timeout;
  static load(file: string): SavedPins {
    const p = new SavedPins();
    try {
      for (const [k, v] of Object.entries(JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>)) {
        // Older daemons saved bare address lists: they count as expired, so the next use refreshes them.
        const pin = Array.isArray(v) ? { ips: v, expires: 0 } : (v as Pin);
        if (Array.isArray(pin?.ips) && pin.ips.every((ip) => typeof ip === 'string') && typeof pin.expires === 'number') p.set(k, { ips: pin.ips, expires: pin.expires });
      }
    } catch {
      /* none yet */
    }
    p.file = file;
    return p;
  }
  override set(k: string, v: Pin): this {
    super.set(k, v);
    this.schedule();
    return this;
  }
  override delete(k: string): boolean {
    const had = super.delete(k);
    if (had) this.schedule();
    return had;
  }
  private schedule(): void {
    if (!this.file || this.timer) return;
    this.timer = setTimeout(() => this.flush(), 1000);
    this.timer.unref();
  }
  /** Write now what is pending. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.file) writeFileSync(this.file, JSON.stringify(Object.fromEntries(this)));
  }
  /** Stop saving (the sandbox's network is going away and its file with it). */
  discard(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.file = undefined;
  }
}
