// Storage throughput inside a sandbox, same run, same sandbox: a named volume (loop-mounted ext4), a
// bind of a host directory, an overlay of one, a tmpfs, and the sandbox's own rootfs (its overlay) as
// the baseline, and a bind and a volume served through the file gate (cordon-fsgate, FUSE) with file
// rules, and with rules and file events on. Per target: a 256 MiB file written (fsync'd) and read back, and 10,000 small files
// created. Times are taken inside the sandbox (date +%s%N around the work), so exec overhead is out.
// BENCH_RUNS (default 5) samples per figure, BENCH_RUNTIMES (default runsc,crun).
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Sandbox } from '../src/sdk/index.js';
import { startDaemon } from '../test/helpers/daemon.js';
import { pct } from './lib/stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const RUNTIMES = (process.env.BENCH_RUNTIMES ?? 'runsc,crun').split(',') as ('runsc' | 'crun')[];
const BIG_MIB = 256;
const SMALL = 10_000;
const base = `/tmp/cordon-bench-volumes-${process.pid}`;

const TARGETS = [
  ['rootfs (baseline)', '/root/bench'],
  ['volume', '/vol'],
  ['bind', '/bind'],
  ['overlay', '/ov'],
  ['tmpfs', '/scratch'],
  ['bind + rules (gate)', '/ruled'],
  ['bind + rules + events', '/evented'],
  ['volume + rules (gate)', '/rvol'],
] as const;
// Checked on every operation of the gated targets; matching none of the workload's files.
const RULE = { action: 'block' as const, ops: ['write' as const, 'create' as const, 'remove' as const, 'rename' as const], path: '/**/*.env' };

async function timed(s: Sandbox, script: string): Promise<number> {
  const r = await s.exec(['sh', '-c', `s=$(date +%s%N); ${script}; e=$(date +%s%N); echo $(( (e - s) / 1000 ))`]);
  if (r.exit_code !== 0) throw new Error(`bench step failed (${r.exit_code}): ${r.stderr}`);
  return Number(r.stdout.trim().split('\n').at(-1)) / 1000; // ms
}

function line(name: string, xs: number[], unit: string, digits = 1): string {
  const f = (p: number) => pct(xs, p).toFixed(digits).padStart(9);
  return `  ${name.padEnd(20)} p50 ${f(50)} ${unit}  p90 ${f(90)} ${unit}  p99 ${f(99)} ${unit}  (n=${xs.length})`;
}

async function main(): Promise<void> {
  rmSync(base, { recursive: true, force: true });
  mkdirSync(join(base, 'bind'), { recursive: true });
  mkdirSync(join(base, 'ov'), { recursive: true });
  mkdirSync(join(base, 'ruled'), { recursive: true });
  mkdirSync(join(base, 'evented'), { recursive: true });
  const d = await startDaemon('bench-volumes', { args: ['--allow-mount-root', base] });
  try {
    console.log(`storage inside a sandbox: ${BIG_MIB} MiB file (write+fsync, read), ${SMALL} small files; ${RUNS} runs each; load ${(await import('node:os')).loadavg()[0].toFixed(1)}`);
    for (const runtime of RUNTIMES) {
      const vol = `bench-${runtime}`;
      await d.client.volumes.create(vol, { size: '1g' });
      await d.client.volumes.create(`${vol}-ruled`, { size: '1g' });
      const s = await d.client.create({
        runtime,
        memory: '1g',
        disk: '1g',
        volumes: [{ name: vol, path: '/vol' }, { name: `${vol}-ruled`, path: '/rvol' }],
        mounts: [
          { type: 'bind', source: join(base, 'bind'), target: '/bind' },
          { type: 'overlay', source: join(base, 'ov'), target: '/ov' },
          { type: 'tmpfs', target: '/scratch', tmpfs_size: '400m' },
          { type: 'bind', source: join(base, 'ruled'), target: '/ruled' },
          { type: 'bind', source: join(base, 'evented'), target: '/evented' },
        ],
        file_rules: [RULE],
        file_events: ['/evented'],
      });
      try {
        const write: Record<string, number[]> = {};
        const read: Record<string, number[]> = {};
        const small: Record<string, number[]> = {};
        for (let i = 0; i < RUNS; i++) {
          // Interleaved: every target sees the same machine state in each round.
          for (const [name, dir] of TARGETS) {
            await timed(s, `mkdir -p ${dir}/s && rm -f ${dir}/big`);
            (write[name] ??= []).push(await timed(s, `dd if=/dev/zero of=${dir}/big bs=1M count=${BIG_MIB} conv=fsync 2>/dev/null`));
            (read[name] ??= []).push(await timed(s, `dd if=${dir}/big of=/dev/null bs=1M 2>/dev/null`));
            await timed(s, `rm -f ${dir}/big`);
            (small[name] ??= []).push(await timed(s, `cd ${dir}/s && i=0; while [ $i -lt ${SMALL} ]; do echo x > f$i; i=$((i+1)); done`));
            await timed(s, `rm -rf ${dir}/s`);
          }
        }
        const mbps = (ms: number[]) => ms.map((m) => (BIG_MIB * 1000) / m);
        const fps = (ms: number[]) => ms.map((m) => (SMALL * 1000) / m);
        const baseline = TARGETS[0][0];
        console.log(`\n${runtime}: ${BIG_MIB} MiB write (fsync), MiB/s`);
        for (const [name] of TARGETS) console.log(line(name, mbps(write[name]), 'MiB/s'));
        console.log(`${runtime}: ${BIG_MIB} MiB read, MiB/s`);
        for (const [name] of TARGETS) console.log(line(name, mbps(read[name]), 'MiB/s'));
        console.log(`${runtime}: ${SMALL} small files created, files/s`);
        for (const [name] of TARGETS) console.log(line(name, fps(small[name]), 'files/s', 0));
        console.log(`${runtime}: throughput relative to the sandbox's rootfs (p50; >1 is faster)`);
        for (const [name] of TARGETS.slice(1)) {
          const r = (xs: Record<string, number[]>) => (pct(xs[baseline], 50) / pct(xs[name], 50)).toFixed(2);
          console.log(`  ${name.padEnd(20)} write ${r(write)}x   read ${r(read)}x   small files ${r(small)}x`);
        }
      } catch (e) {
        console.error(`${runtime}: ${(e as Error).message}`); // before cleanup, which could hide it
        throw e;
      } finally {
        // Every event, a page (1000) at a time: what the gate's folding and rate limit let through.
        const file: { data: { op?: string; count?: number } | null }[] = [];
        for (let after = 0; ; ) {
          const page = (await fetch(`${d.url}/v1/sandboxes/${s.id}/events?after=${after}`).then((r) => r.json()).catch(() => [])) as { seq: number; type: string; data: { op?: string; count?: number } | null }[];
          if (!page.length) break;
          file.push(...page.filter((e) => e.type === 'file'));
          after = page.at(-1)!.seq;
        }
        const sum = (f: (op?: string) => boolean) => file.reduce((n, e) => n + (e.data && f(e.data.op) ? Number(e.data.count ?? 1) : 0), 0);
        console.log(`${runtime}: ${file.length} file events recorded for ${sum((op) => op !== 'dropped')} operations (folded), ${sum((op) => op === 'dropped')} operations dropped by the rate limit`);
        await s.remove().catch(() => {});
        await d.client.volumes.remove(vol, { force: true }).catch(() => {});
        await d.client.volumes.remove(`${vol}-ruled`, { force: true }).catch(() => {});
      }
    }
  } finally {
    await d.cleanup();
    rmSync(base, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
