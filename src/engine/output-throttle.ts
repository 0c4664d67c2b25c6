// Output that no client reads only feeds the replay ring, where it is soon dropped. Reading it at
// full speed would let a sandbox that floods its stdout with nobody attached spend a daemon core and
// pile up garbage buffers faster than the collector frees them (measured: ~65 MiB of resident memory
// under load for `yes` through runsc). So unobserved output is read at a bounded rate: past it the
// pipes are left unread for a moment and the process's writes block, as on a slow terminal.

export const UNOBSERVED_BYTES_PER_SEC = 16 * 1024 * 1024;

/** A token bucket over the bytes read while nobody observes a process. */
export class UnobservedThrottle {
  private tokens: number;
  private last = Date.now();
  private timer?: NodeJS.Timeout;

  constructor(
    /** Called with true to hold the pipes, false to let them flow again. */
    private readonly hold: (held: boolean) => void,
    private readonly rate = UNOBSERVED_BYTES_PER_SEC,
    private readonly burst = rate / 4,
  ) {
    this.tokens = burst;
  }

  /** Account `n` bytes read while unobserved; holds the pipes until the bucket is back above zero. */
  take(n: number): void {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    this.tokens -= n;
    if (this.tokens >= 0 || this.timer) return;
    this.hold(true);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.hold(false);
    }, Math.ceil((-this.tokens / this.rate) * 1000));
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
