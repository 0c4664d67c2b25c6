// Build time of a 3-step template (COPY, RUN, RUN on base): cold (--no-cache, every step in a sandbox)
// against cached (no sandbox at all), in one run; and `docker build` of the same Dockerfile on the same
// rootfs where dockerd is installed. Prints percentiles and ratios.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { BaseTemplate } from '../src/image/base-template.js';
import type { Cordon } from '../src/sdk/index.js';
import { startDaemon, TEMPLATES_DIR } from '../test/helpers/daemon.js';
import { dockerPeer } from './lib/docker-peer.js';
import { pct, ratio } from './lib/stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const DOCKERFILE = 'FROM base\nCOPY app.txt /opt/app/app.txt\nRUN wc -c /opt/app/app.txt > /opt/app/size.txt\nRUN echo built > /opt/app/done.txt\n';

const fmt = (name: string, xs: number[]) => `${name.padEnd(36)} p50 ${pct(xs, 50).toFixed(0).padStart(6)} ms   p90 ${pct(xs, 90).toFixed(0).padStart(6)} ms   p99 ${pct(xs, 99).toFixed(0).padStart(6)} ms   (n=${xs.length})`;

function contextTar(): Readable {
  const pack = tar.pack();
  pack.entry({ name: 'Dockerfile' }, DOCKERFILE);
  pack.entry({ name: 'app.txt' }, 'cordon '.repeat(10_000));
  pack.finalize();
  return pack;
}

async function timedBuild(c: Cordon, noCache: boolean): Promise<{ ms: number; sandboxes: number }> {
  let sandboxes = 0;
  const t = performance.now();
  await c.templates.build('bench-3step', contextTar(), { noCache, onEvent: (ev) => ev.type === 'sandbox' && sandboxes++ });
  return { ms: performance.now() - t, sandboxes };
}

async function main() {
  const d = await startDaemon('bench-template');
  const c = d.client;
  const work = mkdtempSync('/var/lib/cordon-test/bench-tmpl-');
  try {
    console.log(`template build benchmark: 3 steps (COPY, RUN, RUN) on base, ${RUNS} runs per figure, ${new Date().toISOString()}`);
    await timedBuild(c, true); // warm-up: base template, page cache
    const cold: number[] = [];
    const cached: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const a = await timedBuild(c, true);
      if (a.sandboxes !== 3) throw new Error(`a cold build made ${a.sandboxes} sandboxes, expected 3`);
      cold.push(a.ms);
      const b = await timedBuild(c, false);
      if (b.sandboxes !== 0) throw new Error(`a cached build made ${b.sandboxes} sandboxes, expected none`);
      cached.push(b.ms);
    }
    console.log(fmt('cordon build, cold (--no-cache)', cold));
    console.log(fmt('cordon build, cached', cached));
    console.log(`cold / cached: ${ratio(cold, cached)}`);

    const rootfs = (await new BaseTemplate(TEMPLATES_DIR).ensure()).lowerDirs[0];
    writeFileSync(join(work, 'app.txt'), 'cordon '.repeat(10_000));
    const dockerCold: number[] = [];
    const dockerCached: number[] = [];
    await dockerPeer(rootfs, 1, (l) => console.log(l), async (docker, image) => {
      writeFileSync(join(work, 'Dockerfile'), DOCKERFILE.replace('FROM base', `FROM ${image}`));
      const build = async (extra: string[]) => {
        const t = performance.now();
        await docker(['build', '--network', 'none', '-q', ...extra, '-t', 'cordon-bench-3step', work]);
        return performance.now() - t;
      };
      await build(['--no-cache']);
      for (let i = 0; i < RUNS; i++) {
        dockerCold.push(await build(['--no-cache']));
        dockerCached.push(await build([]));
      }
    });
    if (dockerCold.length) {
      console.log(fmt('docker build, cold (--no-cache)', dockerCold));
      console.log(fmt('docker build, cached', dockerCached));
      console.log(`cordon / docker, cold: ${ratio(cold, dockerCold)}`);
      console.log(`cordon / docker, cached: ${ratio(cached, dockerCached)}`);
    }
    await c.templates.remove('bench-3step');
  } finally {
    await d.cleanup();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
