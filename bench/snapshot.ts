// Snapshots and fork, runsc (memory and processes) against crun (files only) in the same run:
// snapshot create of a running sandbox (a counting process, 16 MiB written), create from the
// snapshot until its first exec answers, and fork of 1 and of 5 until all answer; plus the disk each
// snapshot takes (its own layer only). BENCH_RUNS (default 10) sets the sample count.
import { startDaemon } from '../test/helpers/daemon.js';
import { pct } from './lib/stats.js';
import type { Cordon, Sandbox } from '../src/sdk/index.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 10);
const RUNTIMES = ['runsc', 'crun'] as const;

function row(name: string, xs: number[], unit = 'ms'): string {
  const f = (p: number) => pct(xs, p).toFixed(1).padStart(8);
  return `${name.padEnd(40)} p50 ${f(50)} ${unit}  p90 ${f(90)} ${unit}  p99 ${f(99)} ${unit}  (n=${xs.length})`;
}

const ratio = (a: number[], b: number[]) => [50, 90, 99].map((p) => `p${p} ${(pct(a, p) / pct(b, p)).toFixed(2)}x`).join('  ');

async function answers(s: Sandbox): Promise<void> {
  const r = await s.exec(['echo', 'hi']);
  if (r.stdout !== 'hi\n') throw new Error(`unexpected output ${JSON.stringify(r)}`);
}

interface Figures {
  snapshot: number[];
  fromSnapshot: number[];
  fork1: number[];
  fork5: number[];
  bytes: number[];
}

async function measure(c: Cordon, runtime: (typeof RUNTIMES)[number]): Promise<Figures> {
  const f: Figures = { snapshot: [], fromSnapshot: [], fork1: [], fork5: [], bytes: [] };
  const source = await c.create({ runtime });
  try {
    await source.startProcess(['sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i > /root/count; sleep 0.2; done'], { tag: 'counter' });
    await source.exec(['sh', '-c', 'head -c 16777216 /dev/urandom > /root/data']);
    for (let i = 0; i < RUNS; i++) {
      let t = performance.now();
      const snap = await source.snapshot();
      f.snapshot.push(performance.now() - t);
      f.bytes.push(snap.size_bytes);
      t = performance.now();
      const child = await c.create({ snapshot: snap.id });
      await answers(child);
      f.fromSnapshot.push(performance.now() - t);
      await child.remove();
      await c.removeSnapshot(snap.id);

      for (const n of [1, 5] as const) {
        t = performance.now();
        const forks = await source.fork({ count: n });
        const made = forks.map((r) => {
          if (!r.sandbox) throw new Error(`a fork failed: ${r.error?.message}`);
          return c.sandbox(r.sandbox.id);
        });
        await Promise.all(made.map(answers));
        f[n === 1 ? 'fork1' : 'fork5'].push(performance.now() - t);
        for (const s of made) await s.remove();
      }
      process.stderr.write('.');
    }
  } finally {
    await source.remove().catch(() => {});
  }
  return f;
}

async function main() {
  const d = await startDaemon('bench-snapshot');
  try {
    const out: Partial<Record<(typeof RUNTIMES)[number], Figures>> = {};
    for (const rt of RUNTIMES) out[rt] = await measure(d.client, rt);
    process.stderr.write('\n');
    const mib = (xs: number[]) => xs.map((x) => x / 1024 / 1024);
    for (const rt of RUNTIMES) {
      const f = out[rt]!;
      console.log(`# ${rt} (${rt === 'runsc' ? 'files, memory and processes' : 'files only'})`);
      console.log(row('snapshot create (source keeps running)', f.snapshot));
      console.log(row('create from snapshot -> first exec', f.fromSnapshot));
      console.log(row('fork of 1 -> it answers', f.fork1));
      console.log(row('fork of 5 -> all five answer', f.fork5));
      console.log(row('disk per snapshot (own layer + image)', mib(f.bytes), 'MiB'));
    }
    const [a, b] = [out.runsc!, out.crun!];
    console.log('# runsc / crun');
    console.log(`${'snapshot create'.padEnd(40)} ${ratio(a.snapshot, b.snapshot)}`);
    console.log(`${'create from snapshot'.padEnd(40)} ${ratio(a.fromSnapshot, b.fromSnapshot)}`);
    console.log(`${'fork of 1'.padEnd(40)} ${ratio(a.fork1, b.fork1)}`);
    console.log(`${'fork of 5'.padEnd(40)} ${ratio(a.fork5, b.fork5)}`);
  } finally {
    for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
    await d.cleanup();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
