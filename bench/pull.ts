// Pull throughput from a loopback registry against `skopeo copy` of the same image in the same run,
// and the time to create a sandbox from an image already in the store. Prints ratios and percentiles.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon } from '../test/helpers/daemon.js';
import { baseEntries, layerTar, push, writeLayout } from '../test/helpers/oci-image.js';
import { startRegistry } from '../test/helpers/registry.js';
import { pct } from './lib/stats.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const CREATES = Number(process.env.BENCH_CREATES ?? 10);

const fmt = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(0)} ms, p95 ${pct(xs, 95).toFixed(0)} ms`;

async function main() {
  const work = mkdtempSync('/var/lib/cordon-test/bench-pull-');
  const reg = await startRegistry('bench');
  const d = await startDaemon('bench-pull');
  try {
    // Half compressible text, half random: a mix like real images, 4 layers, ~64 MB unpacked.
    const layers = [{ tar: await layerTar(baseEntries()), compression: 'gzip' as const }];
    for (let i = 0; i < 3; i++) {
      const files = Array.from({ length: 40 }, (_, j) => ({ name: `data${i}/f${j}`, content: j % 2 ? randomBytes(256 * 1024) : Buffer.from('cordon '.repeat(40_000)) }));
      layers.push({ tar: await layerTar([{ name: `data${i}`, type: 'directory' as const }, ...files]), compression: 'gzip' as const });
    }
    writeLayout(join(work, 'img'), { layers, config: { Cmd: ['/bin/sh'], Env: ['PATH=/bin'] } });
    const ref = `${reg.host}/bench/img:1`;
    push(join(work, 'img'), ref);
    const ours: number[] = [];
    const skopeo: number[] = [];
    let bytes = 0;
    for (let r = 0; r < ROUNDS; r++) {
      for (const i of await d.client.images.list()) await d.client.images.remove(i.name, { force: true });
      await d.client.images.prune();
      let t = performance.now();
      const img = await d.client.images.pull(ref);
      ours.push(performance.now() - t);
      bytes = img.size;
      const dest = join(work, `skopeo-${r}`);
      t = performance.now();
      const s = spawnSync('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${ref}`, `dir:${dest}`]);
      skopeo.push(performance.now() - t);
      if (s.status !== 0) throw new Error(`skopeo failed: ${s.stderr}`);
      rmSync(dest, { recursive: true, force: true });
    }
    const mbps = (ms: number) => (bytes / 1e6 / (ms / 1000)).toFixed(1);
    console.log(`image: ${(bytes / 1e6).toFixed(1)} MB compressed, ${layers.length} layers, ${ROUNDS} rounds`);
    console.log(`cordon pull (fetch + verify + unpack): ${fmt(ours)} (${mbps(pct(ours, 50))} MB/s at p50)`);
    console.log(`skopeo copy (fetch + verify, no unpack): ${fmt(skopeo)} (${mbps(pct(skopeo, 50))} MB/s at p50)`);
    console.log(`ratio cordon/skopeo at p50: ${(pct(ours, 50) / pct(skopeo, 50)).toFixed(2)}`);

    for (const runtime of (process.env.CORDON_TEST_RUNTIMES ?? 'runsc,crun').split(',')) {
      const times: number[] = [];
      for (let i = 0; i < CREATES; i++) {
        const t = performance.now();
        const sbx = await d.client.create({ image: ref, runtime: runtime as 'runsc', entrypoint: [] });
        times.push(performance.now() - t);
        await sbx.remove({ force: true });
      }
      console.log(`create from a stored image on ${runtime}: ${fmt(times)} (${CREATES} sandboxes)`);
    }
  } finally {
    await d.cleanup();
    await reg.cleanup();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
