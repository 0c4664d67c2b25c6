// Pause and resume latency, in one run on this machine:
//  - cordon pause to disk + resume (runsc checkpoint/restore through the REST API) of an idle sandbox
//    and of one holding 256 MiB in memory (random bytes on its tmpfs, so nothing compresses them);
//  - bare `runsc checkpoint` / `runsc restore` of a plain runsc container on the same rootfs, the
//    floor, idle and with the same 256 MiB (its `runsc delete` after the checkpoint is not timed, as
//    cordon's pause answers before its container has ended);
//  - cordon pause/resume under crun: an in-memory cgroup freeze, the peer without checkpoint.
// Client-side milliseconds per call; BENCH_RUNS (default 10) rounds each.
import { execFile, spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BaseTemplate } from '../src/image/base-template.js';
import type { Sandbox } from '../src/sdk/index.js';
import { startDaemon, TEMPLATES_DIR, type TestDaemon } from '../test/helpers/daemon.js';
import { pct, ratio, row } from './lib/stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 10);
const MIB = 256;
const run = promisify(execFile);
const FLOOR_DIR = '/var/lib/cordon-bench/pause-floor';

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

function print(title: string, rows: [string, number[]][]): void {
  console.log(`\n${title}`);
  for (const [name, xs] of rows) console.log(`${row(name, xs)}   p90 ${pct(xs, 90).toFixed(1)} ms   p99 ${pct(xs, 99).toFixed(1)} ms`);
}

const endedCount = async (sb: Sandbox) => (await sb.events_()).filter((e) => e.type === 'released').length;

async function waitEnded(sb: Sandbox, n: number): Promise<void> {
  for (let i = 0; i < 600 && (await endedCount(sb)) < n; i++) await new Promise((res) => setTimeout(res, 50));
}

/** Pause and resume `sb` RUNS times through the daemon; returns [pause ms, resume ms]. */
async function cordonRounds(sb: Sandbox): Promise<[number[], number[]]> {
  const p: number[] = [];
  const r: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const ended = await endedCount(sb);
    p.push(await timed(() => sb.pause()));
    // As for the floor (whose `runsc delete` is not timed), the resume starts once the container has
    // ended: a resume issued earlier waits for that end first.
    if (sb.info.runtime === 'runsc') await waitEnded(sb, ended + 1);
    r.push(await timed(() => sb.resume()));
    // The agent is back before the next pause (a pause quiesces it first anyway).
    await sb.exec(['true']);
  }
  return [p, r];
}

/** The floor: a plain runsc container (no daemon, no agent, no shim) checkpointed and restored. */
async function floorRounds(rootfs: string, fillMib: number): Promise<[number[], number[]]> {
  const root = join(FLOOR_DIR, 'state');
  const bundle = join(FLOOR_DIR, `bundle-${fillMib}`);
  const image = join(FLOOR_DIR, `image-${fillMib}`);
  const id = `pause-floor-${fillMib}-${process.pid}`;
  rmSync(bundle, { recursive: true, force: true });
  mkdirSync(bundle, { recursive: true });
  const fill = fillMib ? `head -c ${fillMib * 1024 * 1024} /dev/urandom > /tmp/blob; ` : '';
  const spec = {
    ociVersion: '1.0.2',
    process: { terminal: false, user: { uid: 0, gid: 0 }, args: ['/bin/sh', '-c', `${fill}exec sleep 100000`], env: ['PATH=/usr/bin:/bin'], cwd: '/' },
    root: { path: rootfs, readonly: true },
    hostname: 'floor',
    mounts: [{ destination: '/proc', type: 'proc', source: 'proc' }, { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: [`size=${MIB + 64}m`] }],
    linux: { namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }] },
  };
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
  const flags = [`--root=${root}`, '--platform=systrap', '--network=none'];
  const runsc = (args: string[]) => run('runsc', [...flags, ...args], { timeout: 120_000 });
  // --detach with stdio to a file, or the caller waits on the sandbox's stdio (HOST-NOTES).
  const log = join(FLOOR_DIR, `runsc-${fillMib}.log`);
  const detached = (args: string[]) =>
    new Promise<void>((resolve, reject) => {
      const fd = openSync(log, 'w');
      const p = spawn('runsc', [...flags, ...args], { stdio: ['ignore', fd, fd] });
      closeSync(fd);
      p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`runsc ${args[0]}: ${readFileSync(log, 'utf8').split('\n')[0]}`))));
    });
  await runsc(['delete', '--force', id]).catch(() => {});
  await detached(['run', '--detach', '--bundle', bundle, id]);
  try {
    // Wait until the fill is done (the blob has its full size).
    for (let i = 0; fillMib && i < 600; i++) {
      const r = await runsc(['exec', id, '/bin/sh', '-c', 'stat -c %s /tmp/blob 2>/dev/null || echo 0']).catch(() => ({ stdout: '0' }));
      if (Number(r.stdout.trim()) >= fillMib * 1024 * 1024) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const c: number[] = [];
    const r: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      rmSync(image, { recursive: true, force: true });
      mkdirSync(image, { recursive: true });
      c.push(await timed(() => runsc(['checkpoint', '--image-path', image, id])));
      await runsc(['delete', '--force', id]).catch(() => {});
      r.push(await timed(() => detached(['restore', '--image-path', image, '--bundle', bundle, '--detach', id])));
    }
    return [c, r];
  } finally {
    await runsc(['delete', '--force', id]).catch(() => {});
    rmSync(image, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const d: TestDaemon = await startDaemon('bench-pause');
  try {
    const small = await d.client.create({ runtime: 'runsc' });
    const big = await d.client.create({ runtime: 'runsc', memory: `${2 * MIB + 256}m`, tmpfs: [{ path: '/tmp', size: `${MIB + 64}m` }] });
    const fill = await big.exec(['sh', '-c', `head -c ${MIB * 1024 * 1024} /dev/urandom > /tmp/blob && echo ok`]);
    if (fill.stdout !== 'ok\n') throw new Error(`fill failed: ${fill.stderr}`);
    const frozen = await d.client.create({ runtime: 'crun' });
    for (const sb of [small, big, frozen]) await sb.exec(['true']);

    const [sp, sr] = await cordonRounds(small);
    const [bp, br] = await cordonRounds(big);
    const [fp, fr] = await cordonRounds(frozen);
    const imageBytes = (await big.events_()).filter((e) => e.type === 'paused').map((e) => Number(e.data?.imageBytes ?? 0));
    const released = async (sb: Sandbox) => (await sb.events_()).filter((e) => e.type === 'released').map((e) => Number(e.data?.ms ?? 0));
    const resumedPhase = async (sb: Sandbox, field: string) => (await sb.events_()).filter((e) => e.type === 'resumed').map((e) => Number(e.data?.[field] ?? 0));
    const inDaemon = async (sb: Sandbox, field: string) => (await sb.events_()).filter((e) => e.type === 'paused').map((e) => Number(e.data?.[field] ?? 0));

    const rootfs = (await new BaseTemplate(TEMPLATES_DIR).ensure()).lowerDirs[0];
    const [fc0, fr0] = await floorRounds(rootfs, 0);
    const [fc1, fr1] = await floorRounds(rootfs, MIB);

    print('pause (ms, client side)', [
      ['cordon pause to disk, idle (runsc)', sp],
      ['bare runsc checkpoint, idle (floor)', fc0],
      [`cordon pause to disk, ${MIB} MiB in memory`, bp],
      [`bare runsc checkpoint, ${MIB} MiB (floor)`, fc1],
      ['cordon pause, crun (cgroup freeze)', fp],
    ]);
    print('resume (ms, client side)', [
      ['cordon resume from disk, idle (runsc)', sr],
      ['bare runsc restore, idle (floor)', fr0],
      [`cordon resume from disk, ${MIB} MiB in memory`, br],
      [`bare runsc restore, ${MIB} MiB (floor)`, fr1],
      ['cordon resume, crun (thaw)', fr],
    ]);
    console.log('\nratios (cordon / bare runsc, same run)');
    console.log(`  pause idle:   ${ratio(sp, fc0)}`);
    console.log(`  resume idle:  ${ratio(sr, fr0)}`);
    console.log(`  pause ${MIB} MiB: ${ratio(bp, fc1)}`);
    console.log(`  resume ${MIB} MiB: ${ratio(br, fr1)}`);
    console.log('ratios (pause to disk / crun freeze, same run)');
    console.log(`  pause idle:   ${ratio(sp, fp)}`);
    console.log(`  resume idle:  ${ratio(sr, fr)}`);
    print('inside the daemon (event data)', [
      ['pause total, small', await inDaemon(small, 'ms')],
      ['up to the image, small', await inDaemon(small, 'checkpointMs')],
      ['of which space check + exec-path end, small', await inDaemon(small, 'prepMs')],
      ['of which agent quiesce, small', await inDaemon(small, 'quiesceMs')],
      [`pause total, ${MIB} MiB`, await inDaemon(big, 'ms')],
      [`up to the image, ${MIB} MiB`, await inDaemon(big, 'checkpointMs')],
      ['resume: overlay + network ready, small', await resumedPhase(small, 'prepareMs')],
      ['resume: runsc restore, small', await resumedPhase(small, 'restoreMs')],
      ['resume: agent reconnected, small', await resumedPhase(small, 'agentMs')],
      [`resume: runsc restore, ${MIB} MiB`, await resumedPhase(big, 'restoreMs')],
      [`resume: agent reconnected, ${MIB} MiB`, await resumedPhase(big, 'agentMs')],
      ['container ended after the answer, small', await released(small)],
      [`container ended after the answer, ${MIB} MiB`, await released(big)],
    ]);
    console.log(`\ncheckpoint image of the ${MIB} MiB sandbox: p50 ${(pct(imageBytes, 50) / 1024 / 1024).toFixed(1)} MiB on disk`);
    console.log(`host memory: ${readFileSync('/proc/meminfo', 'utf8').split('\n')[2]}`);
  } finally {
    for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
    await d.cleanup();
    rmSync(FLOOR_DIR, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
