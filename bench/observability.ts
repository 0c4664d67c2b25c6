// The cost of metrics and request logging on the exec round trip: two daemons in one run, one with
// the defaults (--metrics on, --request-log on: a JSON line per request to a pipe, as under journald)
// and one with both off, the same operations on each, alternating sample by sample so both see the
// same machine. Also a request that does no sandbox work (GET of a sandbox) to show the per-request
// cost alone, and how long a scrape of /metrics takes. BENCH_RUNS (default 150) sets the samples;
// BENCH_RUNTIMES (default crun,runsc) the runtimes. Goal: on/off within 3% at p50.
import type { Sandbox } from '../src/sdk/index.js';
import { startDaemon, type TestDaemon } from '../test/helpers/daemon.js';
import { pct } from './lib/stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 150);
const RUNTIMES = (process.env.BENCH_RUNTIMES ?? 'crun,runsc').split(',') as ('runsc' | 'crun')[];

function row(name: string, xs: number[]): string {
  const f = (p: number) => pct(xs, p).toFixed(2).padStart(8);
  return `${name.padEnd(46)} p50 ${f(50)} ms  p90 ${f(90)} ms  p99 ${f(99)} ms  (n=${xs.length})`;
}

function ratio(on: number[], off: number[]): string {
  const r = (p: number) => `p${p} ${(pct(on, p) / pct(off, p)).toFixed(3)}x`;
  return `  on / off: ${r(50)}   ${r(90)}   ${r(99)}`;
}

async function timeIt(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

/** Alternate the two sides (which one goes first alternates too), so neither gets the quieter moments. */
async function paired(n: number, a: () => Promise<unknown>, b: () => Promise<unknown>): Promise<[number[], number[]]> {
  const xa: number[] = [];
  const xb: number[] = [];
  for (let i = 0; i < n; i++) {
    if (i % 2) {
      xa.push(await timeIt(a));
      xb.push(await timeIt(b));
    } else {
      xb.push(await timeIt(b));
      xa.push(await timeIt(a));
    }
  }
  return [xa, xb];
}

async function main(): Promise<void> {
  const on: TestDaemon = await startDaemon('bench-obs-on');
  const off: TestDaemon = await startDaemon('bench-obs-off', { args: ['--metrics', 'off', '--request-log', 'off'] });
  console.log(`observability cost: ${RUNS} samples per figure; "on" = --metrics on --request-log on (defaults), "off" = both off`);
  const boxes: Sandbox[] = [];
  try {
    for (const runtime of RUNTIMES) {
      const a = await on.client.create({ runtime });
      const b = await off.client.create({ runtime });
      boxes.push(a, b);
      for (let i = 0; i < 10; i++) await Promise.all([a.exec(['true']), b.exec(['true'])]);
      const [xa, xb] = await paired(RUNS, () => a.exec(['true']), () => b.exec(['true']));
      console.log(`\nexec round trip of true (REST), ${runtime}`);
      console.log(row('metrics + request log on', xa));
      console.log(row('metrics + request log off', xb));
      console.log(ratio(xa, xb));
    }
    const [a, b] = boxes;
    const [ga, gb] = await paired(RUNS * 4, () => on.client.get(a.id), () => off.client.get(b.id));
    console.log('\nGET /v1/sandboxes/{id} (no sandbox work: the per-request cost alone)');
    console.log(row('metrics + request log on', ga));
    console.log(row('metrics + request log off', gb));
    console.log(ratio(ga, gb));
    const scrapes: number[] = [];
    for (let i = 0; i < 50; i++) scrapes.push(await timeIt(async () => (await fetch(`${on.url}/metrics`)).text()));
    console.log('\nscrape of /metrics (the "on" daemon, after the runs above)');
    console.log(row('GET /metrics', scrapes));
  } finally {
    for (const s of boxes) await s.remove().catch(() => {});
    await Promise.all([on.cleanup(), off.cleanup()]);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
