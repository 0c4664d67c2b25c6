// Foundation figures: create → first exec output from the cached `base` template (vs a plain
// `runsc run` / `crun run` of the same rootfs, the floor), exec round trip of `true` (vs plain
// `runsc exec`), Docker as a peer for both (its own dockerd, bench/lib/docker-peer.ts), streamed
// file write/read throughput, and 50 idle sandboxes at once.
// BENCH_RUNS (default 30) sets the sample count.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { BaseTemplate } from '../src/image/base-template.js';
import { startDaemon, TEMPLATES_DIR } from '../test/helpers/daemon.js';
import { pct, ratio, row } from './lib/stats.js';
import { plainBundle, timeToFirstOutput } from './lib/plain-runtime.js';
import { dockerPeer } from './lib/docker-peer.js';
import type { Cordon } from '../src/sdk/index.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const RUNTIMES = ['runsc', 'crun'] as const;

async function createToOutput(c: Cordon, runtime: string): Promise<number[]> {
  const xs: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    const s = await c.create({ runtime: runtime as 'runsc' });
    const r = await s.exec(['echo', 'hi']);
    xs.push(performance.now() - t);
    if (r.stdout !== 'hi\n') throw new Error(`unexpected output ${JSON.stringify(r)}`);
    await s.remove();
  }
  return xs;
}

async function floor(runtime: 'runsc' | 'crun', rootfs: string): Promise<number[]> {
  const bundle = plainBundle(`/var/lib/cordon-bench/floor-${runtime}`, rootfs, ['/bin/echo', 'hi']);
  const root = `/var/lib/cordon-bench/floor-root-${runtime}`;
  const xs: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const id = `floor-${process.pid}-${i}`;
    if (runtime === 'runsc') {
      xs.push(await timeToFirstOutput('runsc', [`--root=${root}`, '--network=none', '--overlay2=root:memory', 'run', '--bundle', bundle, id]));
    } else {
      // Same private-mount-namespace wrapper cordon uses for crun on this host (HOST-NOTES).
      xs.push(await timeToFirstOutput('unshare', ['-m', '--propagation', 'private', '/bin/sh', '-c', 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"', 'x', 'crun', `--root=${root}`, 'run', '--bundle', bundle, id]));
    }
  }
  return xs;
}

async function execRoundTrip(c: Cordon, runtime: string, dataDir: string): Promise<{ api: number[]; plain: number[] }> {
  const s = await c.create({ runtime: runtime as 'runsc' });
  const api: number[] = [];
  const plain: number[] = [];
  try {
    for (let i = 0; i < 5; i++) await s.exec(['true']);
    for (let i = 0; i < RUNS * 2; i++) {
      const t = performance.now();
      await s.exec(['true']);
      api.push(performance.now() - t);
    }
    if (runtime === 'runsc') {
      const root = join(dataDir, 'run', 'runsc');
      for (let i = 0; i < RUNS * 2; i++) {
        const t = performance.now();
        await timeToFirstOutput('runsc', [`--root=${root}`, '--platform=systrap', '--overlay2=none', '--network=none', 'exec', s.id, '/bin/echo', 'x']);
        plain.push(performance.now() - t);
      }
    }
  } finally {
    await s.remove();
  }
  return { api, plain };
}

async function fileThroughput(c: Cordon, runtime: string, mib: number): Promise<{ write: number; read: number }> {
  const s = await c.create({ runtime: runtime as 'runsc' });
  try {
    const chunk = Buffer.alloc(1024 * 1024, 7);
    const src = Readable.from((function* () { for (let i = 0; i < mib; i++) yield chunk; })());
    let t = performance.now();
    await s.files.write('/root/big.bin', src);
    const write = mib / ((performance.now() - t) / 1000);
    t = performance.now();
    const h = createHash('sha256');
    let n = 0;
    for await (const b of await s.files.readStream('/root/big.bin')) {
      h.update(b as Buffer);
      n += (b as Buffer).length;
    }
    const read = mib / ((performance.now() - t) / 1000);
    if (n !== mib * 1024 * 1024) throw new Error(`read ${n} bytes, wrote ${mib} MiB`);
    return { write, read };
  } finally {
    await s.remove();
  }
}

function memAvailable(): number {
  return Number(/MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))![1]) * 1024;
}

async function idleFleet(c: Cordon, count: number): Promise<string> {
  const before = memAvailable();
  const ids: string[] = [];
  let errors = 0;
  const t = performance.now();
  for (let i = 0; i < count; i += 5) {
    const batch = await Promise.allSettled(Array.from({ length: Math.min(5, count - i) }, () => c.create({ runtime: 'runsc', labels: { bench: 'fleet' } })));
    for (const b of batch) b.status === 'fulfilled' ? ids.push(b.value.id) : errors++;
  }
  const created = performance.now() - t;
  const running = (await c.list({ state: ['running'], labels: { bench: 'fleet' } })).length;
  const execs = await Promise.allSettled(ids.map((id) => c.sandbox(id).exec(['true'])));
  errors += execs.filter((e) => e.status === 'rejected' || e.value.exit_code !== 0).length;
  const perSandbox = (before - memAvailable()) / Math.max(1, ids.length) / 1024 / 1024;
  await Promise.allSettled(ids.map((id) => c.remove(id, { force: true })));
  return `${count} idle runsc sandboxes: ${ids.length} created in ${(created / 1000).toFixed(1)} s, ${running} running at once, ${errors} errors, ~${perSandbox.toFixed(0)} MiB host memory each`;
}

async function main() {
  const d = await startDaemon('bench-sandbox');
  const c = d.client;
  try {
    await (await c.create()).remove();
    const rootfs = (await new BaseTemplate(TEMPLATES_DIR).ensure()).lowerDirs[0];
    console.log(`cordon foundation benchmark, ${RUNS} runs per figure, ${new Date().toISOString()}`);
    // Docker first, so its dockerd is stopped before any cordon figure is taken.
    const docker = await dockerPeer(rootfs, RUNS);
    console.log('\n== create → first exec output, cached base template');
    const results: Record<string, number[]> = {};
    for (const rt of RUNTIMES) {
      results[rt] = await createToOutput(c, rt);
      const fl = await floor(rt, rootfs);
      console.log(row(`cordon create+exec (${rt})`, results[rt]));
      console.log(row(`plain ${rt} run of the same rootfs (floor)`, fl));
      console.log(`  ratio cordon/floor ${ratio(results[rt], fl)}`);
    }
    if (docker) {
      console.log(row('docker run --rm --network none (runc)', docker.run));
      for (const rt of RUNTIMES) console.log(`  ratio cordon(${rt})/docker ${ratio(results[rt], docker.run)}`);
    }
    console.log('\n== exec round trip of `true` on a running sandbox');
    const execs: Record<string, number[]> = {};
    for (const rt of RUNTIMES) {
      const { api, plain } = await execRoundTrip(c, rt, d.dataDir);
      execs[rt] = api;
      console.log(row(`cordon exec (${rt})`, api));
      if (plain.length) {
        console.log(row(`plain runsc exec (floor)`, plain));
        console.log(`  ratio cordon/floor ${ratio(api, plain)}`);
      }
    }
    if (docker) {
      console.log(row('docker exec (CLI spawn → exit)', docker.exec));
      for (const rt of RUNTIMES) console.log(`  ratio cordon(${rt})/docker ${ratio(execs[rt], docker.exec)}`);
    }
    console.log('\n== streamed file throughput (256 MiB through the SDK)');
    for (const rt of RUNTIMES) {
      const xs = [];
      for (let i = 0; i < 3; i++) xs.push(await fileThroughput(c, rt, 256));
      console.log(`${`files (${rt})`.padEnd(44)} write p50 ${pct(xs.map((x) => x.write), 50).toFixed(0)} MiB/s   read p50 ${pct(xs.map((x) => x.read), 50).toFixed(0)} MiB/s`);
    }
    console.log('\n== fleet');
    console.log(await idleFleet(c, 50));
  } finally {
    await d.cleanup();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
