import { readFile } from 'node:fs/promises';
import { CordonError } from '../errors/registry.js';
import { formatBytes } from '../util/units.js';

export async function hostMemAvailable(): Promise<number> {
  const text = await readFile('/proc/meminfo', 'utf8');
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(text);
  return m ? Number(m[1]) * 1024 : Number.MAX_SAFE_INTEGER;
}

/** Decide whether one more sandbox may start: a count cap (429) and host memory pressure (503). */
export async function admit(opts: { live: number; max: number; minHostMemory: number; memAvailable?: () => Promise<number> }): Promise<void> {
  if (opts.live >= opts.max) {
    throw new CordonError(
      'too_many_sandboxes',
      `this daemon already runs ${opts.live} sandboxes (limit ${opts.max}); remove some or start the daemon with a higher --max-sandboxes`,
      { live: opts.live, max: opts.max },
    );
  }
  const avail = await (opts.memAvailable ?? hostMemAvailable)();
  if (avail < opts.minHostMemory) {
    throw new CordonError(
      'insufficient_resources',
      `host memory is critically low (${formatBytes(avail)} available, ${formatBytes(opts.minHostMemory)} required); stop sandboxes or retry later`,
      { available_bytes: avail },
    );
  }
}
