// The agent's small-operation latency, quickly: exec of `true` (REST, and the daemon's own
// start→exit), a 1 KiB write and read, the official e2b SDK's commands.run (a login shell) and
// files.write, and watchDir event latency. Where bench/agent.ts compares the agent with the exec path
// and bare `runsc exec` (many minutes), this is the loop for working on the agent channel itself.
// BENCH_BASELINE_AGENT=/path/to/cordon-agent runs a second daemon injecting that binary (e.g. one built
// from an earlier commit) and alternates the two sample by sample, so both see the same machine load,
// and prints the ratio. BENCH_RUNS (default 40), BENCH_RUNTIMES (default runsc), BENCH_WARMUP (lib/warm.ts).
import { Sandbox as E2bSandbox } from 'e2b';
import type { Sandbox } from '../src/sdk/index.js';
import { startDaemon, type TestDaemon } from '../test/helpers/daemon.js';
import { ratio, rowTail } from './lib/stats.js';
import { WARMUP, warmFiles } from './lib/warm.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 40);
const RUNTIMES = (process.env.BENCH_RUNTIMES ?? 'runsc').split(',') as ('runsc' | 'crun')[];
const BASELINE = process.env.BENCH_BASELINE_AGENT;

interface Side {
  name: string;
  d: TestDaemon;
}

/** Time each op on every side, alternating sample by sample. */
async function paired<T>(subjects: T[], fn: (s: T) => Promise<unknown>, n = RUNS): Promise<number[][]> {
  const out = subjects.map(() => [] as number[]);
  for (let i = 0; i < n; i++) {
    for (const [k, s] of subjects.entries()) {
      const t = performance.now();
      await fn(s);
      out[k].push(performance.now() - t);
    }
  }
  return out;
}

function print(sides: Side[], title: string, xs: number[][]): void {
  for (const [k, side] of sides.entries()) console.log(rowTail(`${title}${sides.length > 1 ? ` [${side.name}]` : ''}`, xs[k]));
  if (sides.length > 1) console.log(`  ${sides[1].name} / ${sides[0].name}: ${ratio(xs[1], xs[0])}`);
}

async function restFigures(sides: Side[], runtime: 'runsc' | 'crun'): Promise<void> {
  const boxes: Sandbox[] = await Promise.all(sides.map((s) => s.d.client.create({ runtime })));
  try {
    const kib = Buffer.alloc(1024, 97);
    for (const s of boxes) for (let i = 0; i < 5; i++) await s.exec(['true']), await s.files.write('/tmp/1k', kib), await s.files.read('/tmp/1k');
    const inside = boxes.map(() => [] as number[]);
    console.log(`\n${runtime}`);
    print(sides, 'REST exec true', await paired(boxes, async (s) => inside[boxes.indexOf(s)].push((await s.exec(['true'])).duration_ms)));
    print(sides, '  start→exit inside the daemon', inside);
    print(sides, 'REST write 1 KiB (new daemon)', await paired(boxes, (s) => s.files.write('/tmp/1k', kib)));
    print(sides, 'REST read 1 KiB (new daemon)', await paired(boxes, (s) => s.files.read('/tmp/1k')));
    if (WARMUP > 0) {
      await warmFiles(boxes);
      print(sides, `REST write 1 KiB (warm: +${WARMUP}×3 requests)`, await paired(boxes, (s) => s.files.write('/tmp/1k', kib)));
      print(sides, `REST read 1 KiB (warm: +${WARMUP}×3 requests)`, await paired(boxes, (s) => s.files.read('/tmp/1k')));
    }
  } finally {
    await Promise.all(boxes.map((s) => s.remove()));
  }
}

async function e2bFigures(sides: Side[]): Promise<void> {
  const opts = (d: TestDaemon) => ({ apiKey: 'e2b_bench', apiUrl: d.url, sandboxUrl: d.url, domain: 'cordon.invalid', timeoutMs: 300_000 });
  const boxes = await Promise.all(sides.map((s) => E2bSandbox.create('base', opts(s.d))));
  try {
    for (const e of boxes) for (let i = 0; i < 5; i++) await e.commands.run('true');
    console.log('\ne2b SDK (runsc)');
    print(sides, "commands.run('true')", await paired(boxes, (e) => e.commands.run('true')));
    print(sides, 'commands.run(\'echo "a b" $HOME\')', await paired(boxes, (e) => e.commands.run('echo "a b" $HOME')));
    print(sides, 'files.write 1 KiB', await paired(boxes, (e) => e.files.write('/tmp/e2b-1k', 'x'.repeat(1024))));
    // Bash inside creates files named by the time (ns) it creates them, with builtins only
    // (EPOCHREALTIME and a redirection: no process start between the stamp and the file); the delay
    // to the event at the SDK is the watch latency.
    const latency = async (e: E2bSandbox) => {
      const got: number[] = [];
      await e.files.makeDir('/tmp/w');
      const h = await e.files.watchDir('/tmp/w', (ev) => {
        if (ev.type === 'create') got.push(Date.now() - Number(BigInt(ev.name) / 1_000_000n));
      });
      await e.commands.run(`for i in $(seq ${RUNS}); do : > /tmp/w/\${EPOCHREALTIME/./}000; sleep 0.1; done`);
      await new Promise((r) => setTimeout(r, 1500));
      await h.stop();
      return got;
    };
    const lat: number[][] = [];
    for (const e of boxes) lat.push(await latency(e));
    print(sides, 'watchDir event latency', lat);
  } finally {
    await Promise.all(boxes.map((e) => e.kill()));
  }
}

async function main(): Promise<void> {
  const sides: Side[] = [{ name: 'this build', d: await startDaemon('bench-agent-latency') }];
  try {
    if (BASELINE) sides.push({ name: 'baseline', d: await startDaemon('bench-agent-latency-base', { args: ['--agent-binary', BASELINE] }) });
    console.log(`bench/agent-latency: ${RUNS} samples per figure, runtimes ${RUNTIMES.join(', ')}${BASELINE ? `; baseline agent ${BASELINE}, the two alternate` : ''}`);
    for (const runtime of RUNTIMES) await restFigures(sides, runtime);
    await e2bFigures(sides);
  } finally {
    await Promise.all(sides.map((s) => s.d.cleanup()));
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
