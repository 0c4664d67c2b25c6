// The in-sandbox agent against the exec path it replaces and bare `runsc exec`, in one run: two
// daemons on this machine (--agent on, --agent off), the same operations on each, alternating, and
// for runsc the same operation as a plain `runsc exec` of the sandbox the exec-path daemon runs (the
// floor of anything that starts a process from outside). Exec round trip of `true` (REST, and the
// daemon's own duration), the official e2b SDK's commands.run('true') (a login shell), 1 KiB read and
// write, 1,000 small files, 100 MiB each way, watch event latency, and the agent's memory; the
// in-sandbox cost of starting `true` (a loop inside the sandbox) is printed as the floor of any exec.
// BENCH_RUNS (default 40) sets the sample count; BENCH_RUNTIMES (default runsc,crun) the runtimes;
// BENCH_WARMUP (lib/warm.ts) the requests before the warm 1 KiB rows.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Sandbox as E2bSandbox } from 'e2b';
import type { Sandbox } from '../src/sdk/index.js';
import { startDaemon, type TestDaemon } from '../test/helpers/daemon.js';
import { pct, ratio, rowTail } from './lib/stats.js';
import { WARMUP, warmFiles } from './lib/warm.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 40);
const RUNTIMES = (process.env.BENCH_RUNTIMES ?? 'runsc,crun').split(',') as ('runsc' | 'crun')[];
const MEMORY_PAIRS = Number(process.env.BENCH_MEMORY_PAIRS ?? 6);

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
  for (const [name, xs] of rows) console.log(rowTail(name, xs, unit));
  for (const other of rows.slice(1)) if (other[1].length && !other[0].includes('inside the daemon')) console.log(`  ${other[0]} / ${rows[0][0]}: ${ratio(other[1], rows[0][1])}`);
}

/** Bare `runsc exec` of the exec-path daemon's sandbox: stdin in, stdout out, with a deadline. */
class Bare {
  constructor(private readonly root: string, private readonly id: string) {}

  run(args: string[], input?: Buffer | (() => AsyncIterable<Buffer>), onOut?: (b: Buffer) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const p = spawn('runsc', [`--root=${this.root}`, '--platform=systrap', '--overlay2=none', '--network=none', 'exec', this.id, ...args], {
        stdio: ['pipe', 'pipe', 'pipe'],
        timeout: 300_000,
      });
      let err = '';
      p.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
      p.stdout.on('data', (d: Buffer) => onOut?.(d));
      p.on('error', reject);
      p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`runsc exec ${args.join(' ')}: exit ${code}: ${err}`))));
      if (input === undefined) p.stdin.end();
      else if (Buffer.isBuffer(input)) p.stdin.end(input);
      else Readable.from(input()).pipe(p.stdin);
    });
  }
}

function bareFor(runtime: string, offDir: string, off: Sandbox): Bare | undefined {
  return runtime === 'runsc' ? new Bare(join(offDir, 'run', 'runsc'), off.id) : undefined;
}

/** What starting `true` costs inside the sandbox itself: a shell loop, no daemon, no agent. */
async function insideFloor(runtime: string, s: Sandbox): Promise<void> {
  const r = await s.exec(['sh', '-c', 'a=$(date +%s%N); for i in $(seq 200); do /bin/true; done; b=$(date +%s%N); echo $(( (b-a)/200000 ))'], { timeout: '300s' });
  const l = await s.exec(['bash', '-c', 'a=$(date +%s%N); for i in $(seq 20); do bash -c true; done; b=$(date +%s%N); for i in $(seq 20); do bash -l -c true; done; c=$(date +%s%N); echo $(( (b-a)/20000 )) $(( (c-b)/20000 ))'], { timeout: '300s' });
  const [bashC, bashL] = l.stdout.trim().split(' ');
  console.log(`\nfloor inside the sandbox (${runtime}), µs per process started by a shell loop: /bin/true ${r.stdout.trim()}, bash -c true ${bashC}, bash -l -c true ${bashL}`);
}

async function execFigures(runtime: string, on: Sandbox, off: Sandbox, bare?: Bare): Promise<void> {
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
  if (bare) rows.push(['bare runsc exec true (same sandbox)', await times(RUNS, () => bare.run(['/bin/true']))]);
  print(`exec round trip of true, ${runtime}`, rows);
}

async function fileFigures(runtime: string, on: Sandbox, off: Sandbox, bare?: Bare): Promise<void> {
  const kib = Buffer.alloc(1024, 97);
  await Promise.all([on.files.write('/tmp/1k', kib), off.files.write('/tmp/1k', kib)]);
  const [wa, we] = await paired(RUNS, () => on.files.write('/tmp/1k', kib), () => off.files.write('/tmp/1k', kib));
  const [ra, re] = await paired(RUNS, () => on.files.read('/tmp/1k'), () => off.files.read('/tmp/1k'));
  // The agent's daemon warmed up as one that has been running a while (lib/warm.ts), then timed on
  // its own: each sample above follows an exec-path one, whose process starts leave the host busy.
  // The exec path's figures are those process starts, which warming does not change.
  await warmFiles([on]);
  const waWarm = WARMUP > 0 ? await times(RUNS, () => on.files.write('/tmp/1k', kib)) : [];
  const raWarm = WARMUP > 0 ? await times(RUNS, () => on.files.read('/tmp/1k')) : [];
  const bw = bare ? await times(RUNS, () => bare.run(['/bin/sh', '-c', 'cat > /tmp/1k-bare'], kib)) : [];
  const br = bare ? await times(RUNS, () => bare.run(['/bin/cat', '/tmp/1k'])) : [];
  print(`1 KiB file write, ${runtime}`, [
    ['agent: write 1 KiB (new daemon, alternating with the exec path)', wa],
    ...(WARMUP > 0 ? ([[`agent: write 1 KiB (warm: +${WARMUP}×3 requests)`, waWarm]] as [string, number[]][]) : []),
    ['exec path: write 1 KiB', we],
    ...(bare ? ([['bare runsc exec sh -c "cat > f"', bw]] as [string, number[]][]) : []),
  ]);
  print(`1 KiB file read, ${runtime}`, [
    ['agent: read 1 KiB (new daemon, alternating with the exec path)', ra],
    ...(WARMUP > 0 ? ([[`agent: read 1 KiB (warm: +${WARMUP}×3 requests)`, raWarm]] as [string, number[]][]) : []),
    ['exec path: read 1 KiB', re],
    ...(bare ? ([['bare runsc exec cat f', br]] as [string, number[]][]) : []),
  ]);

  const many = async (s: Sandbox) => {
    const t = performance.now();
    for (let i = 0; i < 1000; i++) await s.files.write(`/tmp/many/f${i}.txt`, `file ${i}\n`);
    return performance.now() - t;
  };
  const [ma, me] = [await many(on), await many(off)];
  let bareMany = '';
  if (bare) {
    // 100 bare execs, scaled to 1,000 (a thousand would take minutes and show nothing more).
    const t = performance.now();
    for (let i = 0; i < 100; i++) await bare.run(['/bin/sh', '-c', `mkdir -p /tmp/many-bare && cat > /tmp/many-bare/f${i}.txt`], Buffer.from(`file ${i}\n`));
    bareMany = `, bare runsc exec ~${((performance.now() - t) * 10).toFixed(0)} ms (100 timed, x10)`;
  }
  console.log(`\n1,000 small files written one by one (REST), ${runtime}: agent ${ma.toFixed(0)} ms, exec path ${me.toFixed(0)} ms (${(me / ma).toFixed(1)}x)${bareMany}`);

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
  const bareStream = async (b: Bare) => {
    const chunk = Buffer.alloc(1024 * 1024, 7);
    let t = performance.now();
    await b.run(['/bin/sh', '-c', 'cat > /root/big-bare.bin'], async function* () { for (let i = 0; i < mib; i++) yield chunk; });
    const write = mib / ((performance.now() - t) / 1000);
    t = performance.now();
    let n = 0;
    await b.run(['/bin/cat', '/root/big-bare.bin'], undefined, (d) => (n += d.length));
    const read = mib / ((performance.now() - t) / 1000);
    if (n !== mib * 1024 * 1024) throw new Error(`bare read ${n} bytes of ${mib} MiB`);
    await b.run(['/bin/rm', '-f', '/root/big-bare.bin']);
    return { write, read };
  };
  // Three rounds, alternating, so that a busy moment of the machine does not decide the figure.
  const ws: Record<string, number[]> = { agent: [], exec: [], bare: [] };
  const rs: Record<string, number[]> = { agent: [], exec: [], bare: [] };
  for (let round = 0; round < 3; round++) {
    for (const [k, f] of [['agent', () => stream(on)], ['exec', () => stream(off)], ...(bare ? [['bare', () => bareStream(bare)]] : [])] as [string, () => Promise<{ write: number; read: number }>][]) {
      const r = await f();
      ws[k].push(r.write);
      rs[k].push(r.read);
    }
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const fmt = (k: string) => `write ${med(ws[k]).toFixed(0)} MiB/s, read ${med(rs[k]).toFixed(0)} MiB/s`;
  console.log(`\n100 MiB streamed (median of 3 rounds), ${runtime}: agent ${fmt('agent')}; exec path ${fmt('exec')}${bare ? `; bare runsc exec (cat) ${fmt('bare')}` : ''}`);
  console.log(`  agent / exec path: write ${(med(ws.agent) / med(ws.exec)).toFixed(2)}x, read ${(med(rs.agent) / med(rs.exec)).toFixed(2)}x (higher is better)`);
}

async function e2bFigures(on: Side, off: Side): Promise<void> {
  const offSandbox = await off.d.client.create({ runtime: 'runsc' });
  const bare = bareFor('runsc', off.d.dataDir, offSandbox);
  const opts = (d: TestDaemon) => ({ apiKey: 'e2b_bench', apiUrl: d.url, sandboxUrl: d.url, domain: 'cordon.invalid', timeoutMs: 300_000 });
  const a = await E2bSandbox.create('base', opts(on.d));
  const b = await E2bSandbox.create('base', opts(off.d));
  try {
    for (let i = 0; i < 3; i++) await Promise.all([a.commands.run('true'), b.commands.run('true')]);
    const [ra, rb] = await paired(RUNS, () => a.commands.run('true'), () => b.commands.run('true'));
    print("official e2b SDK commands.run('true') (bash -l -c), runsc", [
      ['agent (login environment cached)', ra],
      ['exec path (login shell every time)', rb],
      ['bare runsc exec bash -l -c true', await times(RUNS, () => bare!.run(['/bin/bash', '-l', '-c', 'true']))],
      ['bare runsc exec bash -c true', await times(RUNS, () => bare!.run(['/bin/bash', '-c', 'true']))],
    ]);
    const [wa, wb] = await paired(Math.min(RUNS, 20), () => a.files.write('/tmp/e2b-1k', 'x'.repeat(1024)), () => b.files.write('/tmp/e2b-1k', 'x'.repeat(1024)));
    print('official e2b SDK files.write 1 KiB, runsc', [
      ['agent', wa],
      ['exec path', wb],
    ]);
    // Bash in the sandbox creates files named by the time (ns) it creates them, with builtins only
    // (EPOCHREALTIME and a redirection: no process start between the stamp and the file); the delay
    // to the event reaching the SDK is the watch latency.
    const latency = async (sb: E2bSandbox) => {
      const got: number[] = [];
      await sb.files.makeDir('/tmp/w');
      const h = await sb.files.watchDir('/tmp/w', (e) => {
        if (e.type === 'create') got.push(Date.now() - Number(BigInt(e.name) / 1_000_000n));
      });
      await sb.commands.run('for i in $(seq 30); do : > /tmp/w/${EPOCHREALTIME/./}000; sleep 0.1; done');
      await new Promise((r) => setTimeout(r, 1500));
      await h.stop();
      return got;
    };
    print('watchDir event latency (file created inside → event at the SDK), runsc', [
      ['agent (inotify)', await latency(a)],
      ['exec path (polling)', await latency(b)],
    ]);
  } finally {
    await Promise.all([a.kill(), b.kill(), offSandbox.remove()]);
  }
}

/**
 * What the agent costs the host per sandbox: the sandbox's memory (its cgroup, sentry and gofer included
 * under runsc) idle with the agent against sandboxes without it (--agent off), MEMORY_PAIRS of each
 * created fresh for this figure and idle for a few seconds (the agent trims after 2 s); the median of
 * each side. One pair alone is noise: idle sandboxes without the agent alone differ by up to 1.5 MiB
 * here. The sandbox's kernel's own VmRSS of the agent is printed too; under gVisor it counts mapped
 * pages the host need not hold.
 */
async function memoryFigures(runtime: 'runsc' | 'crun', on: Side, off: Side): Promise<void> {
  const withAgent: Sandbox[] = [];
  const without: Sandbox[] = [];
  try {
    for (let i = 0; i < MEMORY_PAIRS; i++) {
      withAgent.push(await on.d.client.create({ runtime }));
      without.push(await off.d.client.create({ runtime }));
    }
    await new Promise((r) => setTimeout(r, 5000));
    const rss = await withAgent[0].exec(['sh', '-c', 'grep -E "^VmRSS" /proc/$PPID/status']);
    // Each sandbox's median of three readings, then the median of the sandboxes.
    const idleMiB = async (s: Sandbox) => {
      const xs: number[] = [];
      for (let i = 0; i < 3; i++) {
        xs.push((await s.stats()).memory_usage / 2 ** 20);
        await new Promise((r) => setTimeout(r, 200));
      }
      return pct(xs, 50);
    };
    const mw = pct(await Promise.all(withAgent.map(idleMiB)), 50);
    const mo = pct(await Promise.all(without.map(idleMiB)), 50);
    console.log(
      `\nmemory, ${runtime}: sandbox memory (cgroup; median of ${MEMORY_PAIRS} idle sandboxes each) with the agent ${mw.toFixed(1)} MiB, without ${mo.toFixed(1)} MiB: ` +
        `the agent costs ${(mw - mo).toFixed(1)} MiB per sandbox (goal <= 5 MiB); its VmRSS as the sandbox's kernel reports it: ${rss.stdout.trim().replace(/\s+/g, ' ')}`,
    );
  } finally {
    await Promise.all([...withAgent, ...without].map((s) => s.remove()));
  }
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
        const bare = bareFor(runtime, off.d.dataDir, b);
        await insideFloor(runtime, a);
        await execFigures(runtime, a, b, bare);
        await fileFigures(runtime, a, b, bare);
      } finally {
        await Promise.all([a.remove(), b.remove()]);
      }
      await memoryFigures(runtime, on, off);
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
