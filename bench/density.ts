// Density through idle pausing: BENCH_SANDBOXES (default 300) runsc sandboxes (64 MiB each) under
// `serve --idle-pause 5s` (BENCH_IDLE; frozen in memory, to disk after BENCH_IDLE_DISK, default 10m), created BENCH_CREATE_CONCURRENCY at a time for at most BENCH_CREATE_BUDGET_S
// seconds (the count reached is printed); then for BENCH_SECONDS (default 60) a random one is called
// (REST exec `true`) every 100 ms, open loop (at most 32 calls in flight; the rest are counted as
// skipped). Prints the call latency (a call to a paused sandbox includes its resume), how many ran at
// once (sampled every second), host memory (MemAvailable before, after creation and lowest during the
// run) and CPU (/proc/stat over the run), and /v1/health latency sampled every 100 ms meanwhile.
// Everything it creates is removed at the end, also when interrupted (SIGINT, SIGTERM, SIGHUP: the run
// stops early and cleans up; it then checks that runsc lists no container of its daemon and deletes
// any it finds).
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Sandbox } from '../src/sdk/index.js';
import { startDaemon, type TestDaemon } from '../test/helpers/daemon.js';
import { pct, rowTail } from './lib/stats.js';

const N = Number(process.env.BENCH_SANDBOXES ?? 300);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 60);
const CREATE_BUDGET_S = Number(process.env.BENCH_CREATE_BUDGET_S ?? 420);
const CREATE_CONCURRENCY = Number(process.env.BENCH_CREATE_CONCURRENCY ?? 3);
const IDLE = process.env.BENCH_IDLE ?? '5s';
/** Frozen this long, a sandbox goes to disk (the daemon's default is 10m; 0: only under memory pressure). */
const IDLE_DISK = process.env.BENCH_IDLE_DISK ?? '10m';
const CALL_EVERY_MS = 100;
const MAX_IN_FLIGHT = 32;
const run = promisify(execFile);

/** Set by SIGINT/SIGTERM/SIGHUP: creation and the run stop early, and everything made is removed. */
let interrupted = false;
let wakeOnInterrupt: (() => void) | undefined;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    if (!interrupted) console.log(`\n${sig}: stopping early; removing every sandbox made`);
    interrupted = true;
    wakeOnInterrupt?.();
  });
}

/** Wait ms, or less when interrupted. */
function pauseFor(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    wakeOnInterrupt = () => {
      clearTimeout(t);
      resolve();
    };
  });
}

function memAvailableMiB(): number {
  const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

function cpuTimes(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = f[3] + (f[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

async function createAll(d: TestDaemon, sandboxes: Sandbox[]): Promise<{ errors: string[]; ms: number[] }> {
  const errors: string[] = [];
  const ms: number[] = [];
  const deadline = Date.now() + CREATE_BUDGET_S * 1000;
  let next = 0;
  const worker = async () => {
    while (next < N && Date.now() < deadline && errors.length < 20 && !interrupted) {
      next++;
      const t = performance.now();
      try {
        sandboxes.push(await d.client.create({ runtime: 'runsc', memory: '64m', timeout: '30m', labels: { bench: 'density' } }));
        ms.push(performance.now() - t);
      } catch (e) {
        errors.push((e as Error).message);
      }
      if (sandboxes.length % 25 === 0 && ms.length) process.stdout.write(`  created ${sandboxes.length}/${N} (MemAvailable ${memAvailableMiB()} MiB)\n`);
    }
  };
  await Promise.all(Array.from({ length: CREATE_CONCURRENCY }, worker));
  return { errors, ms };
}

async function main(): Promise<void> {
  const memStart = memAvailableMiB();
  const d = await startDaemon('bench-density', { args: ['--idle-pause', IDLE, '--idle-pause-disk', IDLE_DISK, '--max-sandboxes', String(N + 10), '--runtime', 'runsc'] });
  const sandboxes: Sandbox[] = [];
  try {
    console.log(`density: ${N} runsc sandboxes, --idle-pause ${IDLE} --idle-pause-disk ${IDLE_DISK}, a random one called every ${CALL_EVERY_MS} ms for ${SECONDS} s`);
    const { errors, ms: createMs } = await createAll(d, sandboxes);
    const memCreated = memAvailableMiB();
    console.log(`created ${sandboxes.length} of ${N}${sandboxes.length < N ? ` (stopped: ${errors.length ? `errors, first: ${errors[0]}` : `create budget ${CREATE_BUDGET_S} s`})` : ''}`);
    if (!sandboxes.length) throw new Error(`no sandbox could be created: ${errors[0]}`);
    // Let the idle ones go to sleep before measuring.
    await pauseFor(10_000);

    const calls: number[] = [];
    const health: number[] = [];
    const runningSamples: number[] = [];
    let callErrors = 0;
    let skipped = 0;
    let inFlight = 0;
    let firstCallError: string | undefined;
    let memLowest = memAvailableMiB();
    const cpu0 = cpuTimes();
    const end = Date.now() + SECONDS * 1000;
    const caller = setInterval(() => {
      if (inFlight >= MAX_IN_FLIGHT) return void skipped++;
      const sb = sandboxes[Math.floor(Math.random() * sandboxes.length)];
      inFlight++;
      timed(() => sb.exec(['true']))
        .then((t) => calls.push(t))
        .catch((e: Error) => {
          callErrors++;
          firstCallError ??= e.message;
        })
        .finally(() => inFlight--);
    }, CALL_EVERY_MS);
    const healthTimer = setInterval(() => void timed(() => d.client.health()).then((t) => health.push(t), () => health.push(NaN)), CALL_EVERY_MS);
    const sampler = setInterval(() => {
      memLowest = Math.min(memLowest, memAvailableMiB());
      void d.client.list({ state: ['running'] }).then((l) => runningSamples.push(l.length), () => {});
    }, 1000);
    if (!interrupted) await pauseFor(end - Date.now());
    clearInterval(caller);
    clearInterval(healthTimer);
    clearInterval(sampler);
    const cpu1 = cpuTimes();
    while (inFlight > 0) await new Promise((r) => setTimeout(r, 100));
    const paused = (await d.client.list({ state: ['paused'] })).length;

    console.log(`\ncreate (client side, ${CREATE_CONCURRENCY} at a time)`);
    console.log(rowTail('create', createMs));
    console.log(`\nduring the ${SECONDS} s run`);
    console.log(rowTail('exec true on a random sandbox', calls));
    console.log(rowTail('GET /v1/health', health.filter((x) => !Number.isNaN(x))));
    console.log(`calls: ${calls.length} ok, ${callErrors} failed${firstCallError ? ` (first: ${firstCallError})` : ''}, ${skipped} skipped (${MAX_IN_FLIGHT} in flight)`);
    console.log(`running at once (sampled each second): p50 ${pct(runningSamples, 50)}  max ${Math.max(...runningSamples)}  of ${sandboxes.length}; paused at the end: ${paused}`);
    console.log(`host MemAvailable: ${memStart} MiB before, ${memCreated} MiB after creating (${memStart - memCreated} MiB used), lowest during the run ${memLowest} MiB`);
    console.log(`host CPU busy during the run: ${((100 * (cpu1.busy - cpu0.busy)) / (cpu1.total - cpu0.total)).toFixed(1)}% of all cores`);
  } finally {
    await cleanup(d, sandboxes);
    await d.cleanup();
  }
}

async function cleanup(d: TestDaemon, sandboxes: Sandbox[]): Promise<void> {
  // A Ctrl-C in a terminal reaches the daemon too: start it again on the same data, then remove through it.
  if (!(await d.client.health().then(() => true, () => false))) {
    await d.stop().catch(() => {});
    await d.restart().catch((e: Error) => console.error(`cleanup: the daemon did not start again: ${e.message}`));
  }
  const left = [...sandboxes];
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (let sb = left.pop(); sb; sb = left.pop()) await d.client.remove(sb.id, { force: true }).catch(() => {});
    }),
  );
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  // Whatever the daemon could not remove must not outlive the bench: its runsc state root is its own.
  const root = join(d.dataDir, 'run', 'runsc');
  const leftOver = await run('runsc', [`--root=${root}`, 'list', '--quiet'], { timeout: 60_000 }).then((r) => r.stdout.split('\n').filter(Boolean), () => [] as string[]);
  for (const id of leftOver) await run('runsc', [`--root=${root}`, 'delete', '--force', id], { timeout: 60_000 }).catch(() => {});
  console.log(`cleanup: ${sandboxes.length} sandboxes removed through the API; ${leftOver.length} runsc container(s) left over and deleted`);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
