import { CordonError } from '../errors/registry.js';

/**
 * Serialises operations per key (a sandbox id) so that, say, stop and remove never interleave.
 * Every child process has a deadline, so a holder always finishes; the wait is bounded all the same,
 * so that a bug never turns into requests that hang forever: past it the caller gets a 503 "busy".
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();
  /** `before` runs at the start of every turn (work a holder left running in the background that the next one must wait for). */
  constructor(
    private readonly maxWaitMs = 5 * 60_000,
    private readonly before?: (key: string) => Promise<unknown>,
  ) {}

  run<T>(key: string, fn: () => Promise<T>, maxWaitMs = this.maxWaitMs): Promise<T> {
    const prev = this.tails.get(key);
    const turn = prev ? waitAtMost(prev, maxWaitMs, key) : Promise.resolve();
    const before = this.before;
    const result = before ? turn.then(() => before(key)).then(fn) : turn.then(fn);
    // Whoever comes next waits for this call's fn, or, when this call gave up waiting, for the holder.
    const tail = turn.then(
      () => result.then(noop, noop),
      () => prev!,
    );
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return result;
  }
}

const noop = () => {};

function waitAtMost(p: Promise<void>, ms: number, key: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () =>
        reject(
          new CordonError('unavailable', `sandbox ${key} is busy with another operation that has taken over ${Math.round(ms / 1000)}s; retry later`, {
            sandbox_id: key,
            retry_after_s: 5,
          }),
        ),
      ms,
    );
    void p.then(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
