// The in-sandbox agent against the exec path it replaces and bare `runsc exec`, in one run: two
// daemons on this machine (--agent on, --agent off), the same operations on each, alternating.
// Exec round trip of `true` (REST, and the daemon's own duration), the official e2b SDK's
// commands.run('true') (a login shell), 1 KiB read and write, 1,000 small files, 100 MiB each way,
// watch event latency, and the agent's memory. BENCH_RUNS (default 40) sets the sample count;
// BENCH_RUNTIMES (default runsc,crun) the runtimes.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { Sandbox as E2bSandbox } from 'e2b';
import type { Sandbox } from '../src/sdk/index.js';
import { startDaemon, type TestDaemon } from '../test/helpers/daemon.js';
import { pct, ratio, row } from './lib/stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 40);
const RUNTIMES = (process.env.BENCH_RUNTIMES ?? 'runsc,crun').split(',') as ('runsc' | 'crun')[];
const run = promisify(execFile);

interface Side {
  name: string;
  d: TestDaemon;
}

async function times(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn(i);
    xs.push(performance.now() - t);
  }
  return xs;
}

/** Alternate the two sides sample by sample, so both see the same machine. */
async function paired(n: number, a: () => Promise<unknown>, b: () => Promise<unknown>): Promise<[number[], number[]]> {
  const xa: number[] = [];
  const xb: number[] = [];
  for (let i = 0; i < n; i++) {
    xa.push(...(await times(1, a)));
    xb.push(...(await times(1, b)));
  }
  return [xa, xb];
}

function print(title: string, rows: [string, number[], string?][], unit = 'ms'): void {
  console.log(`\n${title}`);
  for (const [name, xs] of rows) console.log(row(name, xs, unit));
  if (rows.length >= 2) console.log(`  ${rows[1][0]} / ${rows[0][0]}: ${ratio(rows[1][1], rows[0][1])}`);
}

async function execFigures(runtime: string, on: Sandbox, off: Sandbox, offDir: string): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.all([on.exec(['true']), off.exec(['true'])]);
  const inside: [number[], number[]] = [[], []];
  const [agent, exec] = await paired(
    RUNS,
    async () => inside[0].push((await on.exec(['true'])).duration_ms),
    async () => inside[1].push((await off.exec(['true'])).duration_ms),
  );
  const rows: [string, number[]][] = [
    [`agent: REST exec true (${runtime})`, agent],
    [`exec path: REST exec true (${runtime})`, exec],
    [`agent: start→exit inside the daemon`, inside[0]],
    [`exec path: start→exit inside the daemon`, inside[1]],
  ];
  if (runtime === 'runsc') {
    const root = join(offDir, 'run', 'runsc');
    rows.push([
      'bare runsc exec true (same sandbox)',
      await times(RUNS, () => run('runsc', [`--root=${root}`, '--platform=systrap', '--overlay2=none', '--network=none', 'exec', off.id, '/bin/true'])),
    ]);
  }
  print(`exec round trip of true, ${runtime}`, rows);
}

async function fileFigures(runtime: string, on: Sandbox, off: Sandbox): Promise<void> {
  const kib = Buffer.alloc(1024, 97);
  await Promise.all([on.files.write('/tmp/1k', kib), off.files.write('/tmp/1k', kib)]);
  const [wa, we] = await paired(RUNS, () => on.files.write('/tmp/1k', kib), () => off.files.write('/tmp/1k', kib));
  const [ra, re] = await paired(RUNS, () => on.files.read('/tmp/1k'), () => off.files.read('/tmp/1k'));
  print(`1 KiB file, ${runtime}`, [
    ['agent: write 1 KiB', wa],
    ['exec path: write 1 KiB', we],
    ['agent: read 1 KiB', ra],
    ['exec path: read 1 KiB', re],
  ]);

  const many = async (s: Sandbox) => {
    const t = performance.now();
    for (let i = 0; i < 1000; i++) await s.files.write(`/tmp/many/f${i}.txt`, `file ${i}\n`);
    return performance.now() - t;
  };
  const [ma, me] = [await many(on), await many(off)];
  console.log(`1,000 small files written one by one (REST), ${runtime}: agent ${ma.toFixed(0)} ms, exec path ${me.toFixed(0)} ms (${(me / ma).toFixed(1)}x)`);

  const mib = 100;
  const stream = async (s: Sandbox) => {
    const chunk = Buffer.alloc(1024 * 1024, 7);
    const src = Readable.from((function* () { for (let i = 0; i < mib; i++) yield chunk; })());
    let t = performance.now();
    await s.files.write('/root/big.bin', src);
    const write = mib / ((performance.now() - t) / 1000);
    t = performance.now();
    let n = 0;
    for await (const b of await s.files.readStream('/root/big.bin')) n += (b as Buffer).length;
    const read = mib / ((performance.now() - t) / 1000);
    if (n !== mib * 1024 * 1024) throw new Error(`read ${n} bytes of ${mib} MiB`);
    await s.files.remove('/root/big.bin');
    return { write, read };
  };
  const sa = await stream(on);
  const se = await stream(off);
  console.log(`100 MiB streamed, ${runtime}: agent write ${sa.write.toFixed(0)} MiB/s, read ${sa.read.toFixed(0)} MiB/s; exec path write ${se.write.toFixed(0)} MiB/s, read ${se.read.toFixed(0)} MiB/s`);
}

async function e2bFigures(on: Side, off: Side): Promise<void> {
  const opts = (d: TestDaemon) => ({ apiKey: 'e2b_bench', apiUrl: d.url, sandboxUrl: d.url, domain: 'cordon.invalid', timeoutMs: 300_000 });
  const a = await E2bSandbox.create('base', opts(on.d));
  const b = await E2bSandbox.create('base', opts(off.d));
  try {
    for (let i = 0; i < 3; i++) await Promise.all([a.commands.run('true'), b.commands.run('true')]);
    const [ra, rb] = await paired(RUNS, () => a.commands.run('true'), () => b.commands.run('true'));
    print("official e2b SDK commands.run('true') (bash -l -c), runsc", [
      ['agent (login environment cached)', ra],
      ['exec path (login shell every time)', rb],
    ]);
    const [wa, wb] = await paired(Math.min(RUNS, 20), () => a.files.write('/tmp/e2b-1k', 'x'.repeat(1024)), () => b.files.write('/tmp/e2b-1k', 'x'.repeat(1024)));
    print('official e2b SDK files.write 1 KiB, runsc', [
      ['agent', wa],
      ['exec path', wb],
    ]);
    // A process in the sandbox creates files named by the time (ns) it creates them; the delay to the
    // event reaching the SDK is the watch latency.
    const latency = async (sb: E2bSandbox) => {
      const got: number[] = [];
      await sb.files.makeDir('/tmp/w');
      const h = await sb.files.watchDir('/tmp/w', (e) => {
        if (e.type === 'create') got.push(Date.now() - Number(BigInt(e.name) / 1_000_000n));
      });
      await sb.commands.run('for i in $(seq 30); do touch /tmp/w/$(date +%s%N); sleep 0.1; done');
      await new Promise((r) => setTimeout(r, 1500));
      await h.stop();
      return got;
    };
    print('watchDir event latency (file created inside → event at the SDK), runsc', [
      ['agent (inotify)', await latency(a)],
      ['exec path (polling)', await latency(b)],
    ]);
  } finally {
    await Promise.all([a.kill(), b.kill()]);
  }
}

async function memoryFigures(runtime: string, on: Sandbox, off: Sandbox): Promise<void> {
  const rss = await on.exec(['sh', '-c', 'grep VmRSS /proc/$PPID/status']);
  await new Promise((r) => setTimeout(r, 3000));
  const [sa, sb] = [await on.stats(), await off.stats()];
  console.log(
    `memory, ${runtime}: agent VmRSS as the sandbox's kernel reports it: ${rss.stdout.trim().replace(/\s+/g, ' ')}; ` +
      `sandbox memory (cgroup) idle with the agent ${(sa.memory_usage / 2 ** 20).toFixed(1)} MiB, without ${(sb.memory_usage / 2 ** 20).toFixed(1)} MiB`,
  );
}

async function main(): Promise<void> {
  const on: Side = { name: 'agent', d: await startDaemon('bench-agent-on') };
  const off: Side = { name: 'exec', d: await startDaemon('bench-agent-off', { args: ['--agent', 'off'] }) };
  try {
    console.log(`bench/agent: ${RUNS} samples per figure, runtimes ${RUNTIMES.join(', ')}; the two daemons alternate`);
    for (const runtime of RUNTIMES) {
      const a = await on.d.client.create({ runtime });
      const b = await off.d.client.create({ runtime });
      try {
        await execFigures(runtime, a, b, off.d.dataDir);
        await fileFigures(runtime, a, b);
        await memoryFigures(runtime, a, b);
      } finally {
        await Promise.all([a.remove(), b.remove()]);
      }
    }
    await e2bFigures(on, off);
  } finally {
    await Promise.all([on.d.cleanup(), off.d.cleanup()]);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
