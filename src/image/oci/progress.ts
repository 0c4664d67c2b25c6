/** What a pull or import reports while it works; the API streams these as NDJSON lines. */
export type PullEvent =
  | { type: 'status'; message: string }
  | { type: 'layer'; digest: string; status: 'waiting' | 'downloading' | 'exists' | 'done'; current: number; total?: number }
  | { type: 'total'; current: number; total: number; layers: number; layersDone: number };

export type PullListener = (ev: PullEvent) => void;

/** Tracks per-layer bytes and a total, and throttles byte updates so a fast pull does not flood the stream. */
export class Progress {
  private readonly layers = new Map<string, { current: number; total: number; done: boolean }>();
  private last = 0;

  constructor(private readonly emit: PullListener = () => {}) {}

  status(message: string): void {
    this.emit({ type: 'status', message });
  }

  add(digest: string, total: number, exists: boolean): void {
    this.layers.set(digest, { current: exists ? total : 0, total, done: exists });
    this.emit({ type: 'layer', digest, status: exists ? 'exists' : 'waiting', current: exists ? total : 0, total });
  }

  bytes(digest: string, n: number): void {
    const l = this.layers.get(digest);
    if (!l) return;
    l.current += n;
    const now = Date.now();
    if (now - this.last < 100) return;
    this.last = now;
    this.emit({ type: 'layer', digest, status: 'downloading', current: l.current, total: l.total });
    this.total();
  }

  done(digest: string): void {
    const l = this.layers.get(digest);
    if (!l) return;
    l.done = true;
    l.current = Math.max(l.current, l.total);
    this.emit({ type: 'layer', digest, status: 'done', current: l.current, total: l.total });
    this.total();
  }

  total(): void {
    let current = 0;
    let total = 0;
    let layersDone = 0;
    for (const l of this.layers.values()) {
      current += Math.min(l.current, l.total || l.current);
      total += l.total;
      if (l.done) layersDone++;
    }
    this.emit({ type: 'total', current, total, layers: this.layers.size, layersDone });
  }
}
