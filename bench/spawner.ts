// The daemon's process starter (cordon-spawner) against Node's own spawn, in one run.
// 1. In this process, grown to about a daemon's size: `run('/bin/true')` round trip and the longest
//    event-loop stall while it runs (Node forks the whole process to start a child; the spawner does not).
// 2. Two daemons side by side, one with CORDON_SPAWNER=off: sandbox create + remove, and pause + resume
//    of an idle runsc sandbox, alternating between them. BENCH_RUNS (default 10) of each.
import { startDaemon, type TestDaemon } from '../test/helpers/daemon.js';
import { run, useSpawner } from '../src/util/proc.js';
import { BUILT_SPAWNER, Spawner } from '../src/util/spawner.js';
import { ratio, row } from './lib/stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 10);
const TARGET_RSS_MIB = Number(process.env.BENCH_RSS_MIB ?? 160);

async function timedRun(): Promise<{ ms: number; stall: number }> {
  let stall = 0;
  let last = performance.now();
  const tick = setInterval(() => {
    const now = performance.now();
    stall = Math.max(stall, now - last);
    last = now;
  }, 1);
  const t = performance.now();
  await run('/bin/true', []);
  const ms = performance.now() - t;
  clearInterval(tick);
  return { ms, stall: Math.max(stall, performance.now() - last) };
}

async function inProcess(): Promise<void> {
  const ballast: string[] = [];
  while (process.memoryUsage().rss < TARGET_RSS_MIB * 1024 * 1024) ballast.push('x'.repeat(4096) + ballast.length);
  const spawner = Spawner.start(BUILT_SPAWNER, (m) => console.error(m));
  if (!spawner) throw new Error(`${BUILT_SPAWNER} is missing: run npm run build (it needs golang-1.23-go)`);
  const fig = { node: { ms: [] as number[], stall: [] as number[] }, spawner: { ms: [] as number[], stall: [] as number[] } };
  for (let i = 0; i < RUNS * 4; i++) {
    for (const way of ['node', 'spawner'] as const) {
      useSpawner(way === 'spawner' ? spawner : undefined);
      const r = await timedRun();
      fig[way].ms.push(r.ms);
      fig[way].stall.push(r.stall);
    }
  }
  useSpawner(undefined);
  spawner.stop();
  console.log(`\nrun('/bin/true') in a process of ${Math.round(process.memoryUsage().rss / 1048576)} MiB RSS (n=${RUNS * 4})`);
  console.log(row('Node spawn: round trip', fig.node.ms));
  console.log(row('Node spawn: longest event-loop stall', fig.node.stall));
  console.log(row('cordon-spawner: round trip', fig.spawner.ms));
  console.log(row('cordon-spawner: longest event-loop stall', fig.spawner.stall));
  console.log(`  ratio spawner / Node: round trip ${ratio(fig.spawner.ms, fig.node.ms)}, stall ${ratio(fig.spawner.stall, fig.node.stall)}`);
  ballast.length = 0;
}

async function daemons(): Promise<void> {
  const both: Record<'node' | 'spawner', TestDaemon> = {
    node: await startDaemon('bench-spawner-off', { env: { CORDON_SPAWNER: 'off' } }),
    spawner: await startDaemon('bench-spawner-on'),
  };
  const fig = {
    node: { create: [] as number[], remove: [] as number[], pause: [] as number[], resume: [] as number[] },
    spawner: { create: [] as number[], remove: [] as number[], pause: [] as number[], resume: [] as number[] },
  };
  try {
    const idle = { node: await both.node.client.create({}), spawner: await both.spawner.client.create({}) };
    for (let i = 0; i < RUNS; i++) {
      for (const way of ['node', 'spawner'] as const) {
        const d = both[way];
        let t = performance.now();
        const sb = await d.client.create({});
        fig[way].create.push(performance.now() - t);
        t = performance.now();
        await sb.remove({ force: true });
        fig[way].remove.push(performance.now() - t);
        t = performance.now();
        await idle[way].pause();
        fig[way].pause.push(performance.now() - t);
        t = performance.now();
        await idle[way].resume();
        fig[way].resume.push(performance.now() - t);
      }
    }
    await idle.node.remove({ force: true });
    await idle.spawner.remove({ force: true });
  } finally {
    await both.node.stop();
    await both.spawner.stop();
  }
  console.log(`\nsandboxes (runsc, client side, n=${RUNS}): a daemon with CORDON_SPAWNER=off / one with the spawner`);
  for (const op of ['create', 'remove', 'pause', 'resume'] as const) {
    console.log(row(`${op}, Node spawn`, fig.node[op]));
    console.log(row(`${op}, cordon-spawner`, fig.spawner[op]));
    console.log(`  ratio spawner / Node spawn: ${ratio(fig.spawner[op], fig.node[op])}`);
  }
}

await inProcess();
await daemons();
