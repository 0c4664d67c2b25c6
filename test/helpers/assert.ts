import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll until `fn` holds; fails the test (never asserts elapsed time) if it never does. */
export async function until(what: string, fn: () => Promise<boolean> | boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await Promise.resolve().then(fn).catch(() => false)) return;
    await sleep(100);
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** Assert a promise rejects with a CordonError of this code (and optionally a message matching `msg`). */
export async function rejectsWith(p: Promise<unknown>, code: string, msg?: RegExp): Promise<Error & { code: string; status: number }> {
  try {
    await p;
  } catch (e) {
    const err = e as Error & { code: string; status: number };
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    if (msg) assert.match(err.message, msg);
    return err;
  }
  assert.fail(`expected a ${code} error, but the call succeeded`);
}

/** Lines of /proc/self/mountinfo whose mount point or source mentions `needle`. */
export function mountsMentioning(needle: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(needle));
}
