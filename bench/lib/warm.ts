import type { Sandbox } from '../../src/sdk/index.js';

/**
 * Small-file requests each daemon serves before the "warm" figures. V8 compiles the request path of a
 * new daemon (and of this client) over its first thousand or so requests, which run up to twice as
 * slow as later ones: a daemon that has been up a while answers like the warm rows, a new one like the
 * first. BENCH_WARMUP sets the count (0 skips the warm rows).
 */
export const WARMUP = Number(process.env.BENCH_WARMUP ?? 1000);

/** `n` rounds of a 1 KiB write, read and stat on each sandbox in turn. */
export async function warmFiles(boxes: Sandbox[], n = WARMUP): Promise<void> {
  const kib = Buffer.alloc(1024, 98);
  for (let i = 0; i < n; i++) {
    for (const s of boxes) {
      await s.files.write('/tmp/warm-1k', kib);
      await s.files.read('/tmp/warm-1k');
      await s.files.stat('/tmp/warm-1k');
    }
  }
}
