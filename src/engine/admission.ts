import { readFile } from 'node:fs/promises';
import { CordonError } from '../errors/registry.js';
import { formatBytes } from '../util/units.js';

export async function hostMemAvailable(): Promise<number> {
  const text = await readFile('/proc/meminfo', 'utf8');
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(text);
  return m ? Number(m[1]) * 1024 : Number.MAX_SAFE_INTEGER;
}

/** Refuse (503) when the host has less memory available than the configured floor. */
export async function admitMemory(minHostMemory: number, memAvailable: () => Promise<number> = hostMemAvailable): Promise<void> {
  const avail = await memAvailable();
  if (avail < minHostMemory) {
    throw new CordonError(
      'insufficient_resources',
      `host memory is critically low (${formatBytes(avail)} available, ${formatBytes(minHostMemory)} required); stop sandboxes or retry later`,
      { available_bytes: avail },
    );
  }
}

/**
 * Refuse (429) past the sandbox cap. Synchronous on purpose: the caller counts and inserts the new
 * record without yielding in between, so concurrent creates cannot all slip under the cap.
 */
export function admitCount(live: number, max: number): void {
  if (live >= max) {
    throw new CordonError(
      'too_many_sandboxes',
      `this daemon already runs ${live} sandboxes (limit ${max}); remove some or start the daemon with a higher --max-sandboxes`,
      { live, max },
    );
  }
}
