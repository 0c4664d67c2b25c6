// Pause and resume latency, in one run on this machine, the samples of every row interleaved round by
// round so that all of them see the same load:
//  - cordon pause to disk + resume (runsc checkpoint/restore through the REST API) of an idle sandbox
//    and of one holding 256 MiB in memory (random bytes on its tmpfs, so nothing compresses them);
//  - the floor the issue asks for: bare `runsc checkpoint` / `runsc restore` of the same sandbox, i.e. a
//    twin made from the OCI document cordon wrote for it (agent as init, the same mounts, an overlay of
//    the same layers, cordon's runsc flags), once with the checkpoint flags cordon passes and once with
//    runsc's defaults (flate compression);
//  - a plain `sleep` container (no agent, no helper mounts, runsc's defaults), the old floor, so the
//    cost of the agent itself stays visible;
//  - cordon pause/resume under crun: an in-memory cgroup freeze, the peer without checkpoint.
// The bare rows' `runsc delete` after the checkpoint is not timed, as cordon's pause answers before its
// container has ended. Client-side milliseconds per call; BENCH_RUNS (default 8) rounds each.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BaseTemplate } from '../src/image/base-template.js';
import type { Sandbox } from '../src/sdk/index.js';
import { startDaemon, TEMPLATES_DIR, type TestDaemon } from '../test/helpers/daemon.js';
import { type BareContainer, cordonCheckpointFlags, fillBare, removeDir, startPlain, startTwin } from './lib/runsc-twin.js';
import { pct, ratio, row } from './lib/stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 8);
const MIB = 256;
const FLOOR_DIR = `/var/lib/cordon-bench/pause-floor-${process.pid}`;

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

/** Samples of one row: pause (checkpoint) ms, resume (restore) ms, image bytes. */
interface Series { p: number[]; r: number[]; bytes: number[] }
const series = (): Series => ({ p: [], r: [], bytes: [] });

/** One pause and resume of `sb` through the daemon. */
async function cordonRound(sb: Sandbox, s: Series): Promise<void> {
  const ended = await endedCount(sb);
  s.p.push(await timed(() => sb.pause()));
  // As for the floor (whose `runsc delete` is not timed), the resume starts once the container has
  // ended: a resume issued earlier waits for that end first.
  if (sb.info.runtime === 'runsc') await waitEnded(sb, ended + 1);
  s.r.push(await timed(() => sb.resume()));
  // The agent is back before the next pause (a pause quiesces it first anyway).
  await sb.exec(['true']);
}

/** One bare checkpoint (then an untimed delete) and restore of `c`. */
async function bareRound(c: BareContainer, image: string, flags: string[], s: Series): Promise<void> {
  let bytes = 0;
  s.p.push(await timed(async () => (bytes = await c.checkpoint(image, flags))));
  s.bytes.push(bytes);
  await c.runsc(['delete', '--force', c.id]).catch(() => {});
  s.r.push(await timed(() => c.restore(image)));
}

async function main(): Promise<void> {
  const d: TestDaemon = await startDaemon('bench-pause');
  const bare: BareContainer[] = [];
  try {
    const small = await d.client.create({ runtime: 'runsc' });
    const big = await d.client.create({ runtime: 'runsc', memory: `${2 * MIB + 256}m`, tmpfs: [{ path: '/tmp', size: `${MIB + 64}m` }] });
    const fill = await big.exec(['sh', '-c', `head -c ${MIB * 1024 * 1024} /dev/urandom > /tmp/blob && echo ok`]);
    if (fill.stdout !== 'ok\n') throw new Error(`fill failed: ${fill.stderr}`);
    const frozen = await d.client.create({ runtime: 'crun' });
    for (const sb of [small, big, frozen]) await sb.exec(['true']);

    const rootfs = (await new BaseTemplate(TEMPLATES_DIR).ensure()).lowerDirs[0];
    const platform = process.env.CORDON_RUNSC_PLATFORM ?? 'systrap';
    const twinSmall = await startTwin(d.dataDir, small.id, join(FLOOR_DIR, 'twin-idle'), 'pause-twin-idle');
    bare.push(twinSmall);
    const twinBig = await startTwin(d.dataDir, big.id, join(FLOOR_DIR, 'twin-big'), 'pause-twin-big');
    bare.push(twinBig);
    const plainSmall = await startPlain(rootfs, join(FLOOR_DIR, 'plain-idle'), 'pause-plain-idle', MIB + 64, platform);
    bare.push(plainSmall);
    const plainBig = await startPlain(rootfs, join(FLOOR_DIR, 'plain-big'), 'pause-plain-big', MIB + 64, platform);
    bare.push(plainBig);
    await Promise.all([fillBare(twinBig, MIB), fillBare(plainBig, MIB)]);
    // Let the twins' agents fall into their slow redial (no daemon answers them), as idle as cordon's.
    await new Promise((res) => setTimeout(res, 2000));

    const cordonFlags = await cordonCheckpointFlags();
    console.log(`runsc checkpoint flags cordon passes here: ${cordonFlags.join(' ') || '(none)'}`);
    const S = { cSmall: series(), tSmall: series(), tSmallDef: series(), pSmall: series(), cBig: series(), tBig: series(), tBigDef: series(), pBig: series(), crun: series() };
    const img = (n: string) => join(FLOOR_DIR, `image-${n}`);
    for (let i = 0; i < RUNS; i++) {
      await cordonRound(small, S.cSmall);
      await bareRound(twinSmall, img('twin-idle'), cordonFlags, S.tSmall);
      await bareRound(twinSmall, img('twin-idle'), [], S.tSmallDef);
      await bareRound(plainSmall, img('plain-idle'), [], S.pSmall);
      await cordonRound(big, S.cBig);
      await bareRound(twinBig, img('twin-big'), cordonFlags, S.tBig);
      await bareRound(twinBig, img('twin-big'), [], S.tBigDef);
      await bareRound(plainBig, img('plain-big'), [], S.pBig);
      await cordonRound(frozen, S.crun);
      process.stderr.write(`round ${i + 1}/${RUNS}\n`);
    }
    const events = async (sb: Sandbox, type: string, field: string) => (await sb.events_()).filter((e) => e.type === type).map((e) => Number(e.data?.[field] ?? 0));
    S.cSmall.bytes = await events(small, 'paused', 'imageBytes');
    S.cBig.bytes = await events(big, 'paused', 'imageBytes');

    const same = 'same sandbox, cordon flags';
    const def = 'same sandbox, runsc defaults';
    // The pause table and the resume table list the same rows, of the pause (p) or resume (r) samples.
    const rows = (f: 'p' | 'r', cordon: string, crun: string): [string, number[]][] => [
      [`cordon ${cordon}, idle`, S.cSmall[f]],
      [`bare ${same}, idle`, S.tSmall[f]],
      [`bare ${def}, idle`, S.tSmallDef[f]],
      ['bare plain sleep, runsc defaults, idle', S.pSmall[f]],
      [`cordon ${cordon}, ${MIB} MiB`, S.cBig[f]],
      [`bare ${same}, ${MIB} MiB`, S.tBig[f]],
      [`bare ${def}, ${MIB} MiB`, S.tBigDef[f]],
      [`bare plain sleep, runsc defaults, ${MIB} MiB`, S.pBig[f]],
      [crun, S.crun[f]],
    ];
    print('pause: cordon pause / bare runsc checkpoint (ms, client side)', rows('p', 'pause to disk', 'cordon pause, crun (cgroup freeze)'));
    print('resume: cordon resume / bare runsc restore (ms, client side)', rows('r', 'resume from disk', 'cordon resume, crun (thaw)'));
    console.log(`\nratios: cordon / bare runsc of the same sandbox with cordon's checkpoint flags (the goal: <= 1.2x)`);
    console.log(`  pause idle:      ${ratio(S.cSmall.p, S.tSmall.p)}`);
    console.log(`  resume idle:     ${ratio(S.cSmall.r, S.tSmall.r)}`);
    console.log(`  pause ${MIB} MiB:  ${ratio(S.cBig.p, S.tBig.p)}`);
    console.log(`  resume ${MIB} MiB: ${ratio(S.cBig.r, S.tBig.r)}`);
    console.log(`ratios: cordon / bare runsc of the same sandbox with runsc's default flags`);
    console.log(`  pause idle:      ${ratio(S.cSmall.p, S.tSmallDef.p)}`);
    console.log(`  resume idle:     ${ratio(S.cSmall.r, S.tSmallDef.r)}`);
    console.log(`  pause ${MIB} MiB:  ${ratio(S.cBig.p, S.tBigDef.p)}`);
    console.log(`  resume ${MIB} MiB: ${ratio(S.cBig.r, S.tBigDef.r)}`);
    console.log(`ratios: cordon / bare runsc of a plain sleep container (no agent, runsc defaults)`);
    console.log(`  pause idle:      ${ratio(S.cSmall.p, S.pSmall.p)}`);
    console.log(`  resume idle:     ${ratio(S.cSmall.r, S.pSmall.r)}`);
    console.log(`  pause ${MIB} MiB:  ${ratio(S.cBig.p, S.pBig.p)}`);
    console.log(`  resume ${MIB} MiB: ${ratio(S.cBig.r, S.pBig.r)}`);
    console.log('ratios (pause to disk / crun freeze, same run)');
    console.log(`  pause idle:   ${ratio(S.cSmall.p, S.crun.p)}`);
    console.log(`  resume idle:  ${ratio(S.cSmall.r, S.crun.r)}`);
    const inDaemon = (sb: Sandbox, field: string) => events(sb, 'paused', field);
    const resumed = (sb: Sandbox, field: string) => events(sb, 'resumed', field);
    print('inside the daemon (event data)', [
      ['pause total, idle', await inDaemon(small, 'ms')],
      ['up to the image, idle', await inDaemon(small, 'checkpointMs')],
      ['of which space check + exec-path end, idle', await inDaemon(small, 'prepMs')],
      ['of which agent quiesce, idle', await inDaemon(small, 'quiesceMs')],
      [`pause total, ${MIB} MiB`, await inDaemon(big, 'ms')],
      [`up to the image, ${MIB} MiB`, await inDaemon(big, 'checkpointMs')],
      ['resume: overlay + network ready, idle', await resumed(small, 'prepareMs')],
      ['resume: runsc restore, idle', await resumed(small, 'restoreMs')],
      ['resume: agent reconnected, idle', await resumed(small, 'agentMs')],
      [`resume: runsc restore, ${MIB} MiB`, await resumed(big, 'restoreMs')],
      [`resume: agent reconnected, ${MIB} MiB`, await resumed(big, 'agentMs')],
      ['container ended after the answer, idle', await events(small, 'released', 'ms')],
      [`container ended after the answer, ${MIB} MiB`, await events(big, 'released', 'ms')],
    ]);
    const size = (xs: number[]) => `${(pct(xs, 50) / 1024 / 1024).toFixed(2)} MiB`;
    console.log('\ncheckpoint image on disk (p50)');
    console.log(`  idle:    cordon ${size(S.cSmall.bytes)}   bare same sandbox, cordon's flags ${size(S.tSmall.bytes)}   runsc defaults ${size(S.tSmallDef.bytes)}   plain sleep ${size(S.pSmall.bytes)}`);
    console.log(`  ${MIB} MiB: cordon ${size(S.cBig.bytes)}   bare same sandbox, cordon's flags ${size(S.tBig.bytes)}   runsc defaults ${size(S.tBigDef.bytes)}   plain sleep ${size(S.pBig.bytes)}`);
    console.log(`host memory: ${readFileSync('/proc/meminfo', 'utf8').split('\n')[2]}   load: ${readFileSync('/proc/loadavg', 'utf8').trim()}`);
  } finally {
    for (const c of bare) await c.remove().catch(() => {});
    for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
    await d.cleanup();
    await removeDir(FLOOR_DIR);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
