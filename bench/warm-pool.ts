// Create → first command output for a template's sandbox: a cold create (fresh boot of its files), a
// create restored from the template's memory snapshot (service running), a claim from its warm pool
// (right after the refill, and with the member idle for a second), a claim from its pool with a network
// policy (an allowlist, applied at claim time; egress goes to a fake internet in a namespace the
// benchmark creates, never the uplink),
// and `docker run --network none` of the base rootfs as the peer (plain `runsc run` of the same rootfs,
// the floor, always; it is the only peer where docker.io is not installed), all in one run. Prints p50/p90/p99 of
// the time to a running sandbox handle and to the first output of `echo hi`, the round trip of a second
// `echo hi` on the claimed sandbox (the goal: first output within one such round trip of the handle), and ratios.
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { BaseTemplate } from '../src/image/base-template.js';
import type { Cordon } from '../src/sdk/index.js';
import { HostNet } from '../src/net/host-net.js';
import { startDaemon, TEMPLATES_DIR } from '../test/helpers/daemon.js';
import { startFakeInternet } from '../test/helpers/net-fake-internet.js';
import { dockerPeer } from './lib/docker-peer.js';
import { plainBundle, timeToFirstOutput } from './lib/plain-runtime.js';
import { ratio, rowTail } from './lib/stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 10);
const SETTLE_MS = 1000;
const DOCKERFILE = 'FROM base\nRUN echo ready > /etc/bench-ready\n';
/** The network slot and fake internet of the networked claims (run under flock /tmp/cordon-net-tests.lock). */
const SLOT = 19;
const POLICY = { mode: 'allowlist' as const, allow_hosts: ['api.test'] };

function contextTar(): Readable {
  const pack = tar.pack();
  pack.entry({ name: 'Dockerfile' }, DOCKERFILE);
  pack.finalize();
  return pack;
}

/** Wait until the pool holds `n` ready members (not timed: refills happen between claims). */
async function poolReady(c: Cordon, name: string, n: number): Promise<void> {
  for (let i = 0; i < 1200; i++) {
    const t = await c.templates.get(name);
    if (t.warm.ready >= n && t.warm.starting === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the pool of ${name} never filled`);
}

/**
 * One create: ms to the handle, and to the first output of `echo hi` after it; then, outside those, ms of
 * a second `echo hi` on the same sandbox (one exec round trip, what the first output is compared with).
 */
async function once(c: Cordon, template: string, network?: typeof POLICY): Promise<{ handle: number; output: number; rtt: number; claimed: boolean }> {
  const t = performance.now();
  const sbx = await c.create({ template, ...(network ? { network } : {}) });
  const handle = performance.now() - t;
  try {
    const r = await sbx.exec(['echo', 'hi']);
    const output = performance.now() - t;
    if (r.stdout !== 'hi\n') throw new Error(`echo printed ${JSON.stringify(r.stdout)}`);
    const t2 = performance.now();
    const again = await sbx.exec(['echo', 'hi']);
    const rtt = performance.now() - t2;
    if (again.stdout !== 'hi\n') throw new Error(`the second echo printed ${JSON.stringify(again.stdout)}`);
    const claimed = (await sbx.events_()).some((e) => e.type === 'pool-claim');
    // Outside the timing: the claim's policy is in force (api.test answers).
    if (network && !(await sbx.exec(['curl', '-sS', '--max-time', '8', 'http://api.test/bench'])).stdout.includes('"url":"/bench"')) throw new Error('a networked claim did not reach its allowed host');
    return { handle, output, rtt, claimed };
  } finally {
    await sbx.remove({ force: true });
  }
}

/**
 * `settleMs`: wait this long after the pool is ready before the create. Without it the claim comes right
 * after the refill's restore returned, while that new member's sandbox is still busy (on a loaded 2-core
 * machine that contention is most of the figure); with it, the claim meets a member idle for a while, as
 * claims in use mostly do.
 */
async function series(c: Cordon, template: string, pool: number, network?: typeof POLICY, settleMs = 0): Promise<{ handle: number[]; output: number[]; rtt: number[] }> {
  const handle: number[] = [];
  const output: number[] = [];
  const rtt: number[] = [];
  if (pool) await poolReady(c, template, pool);
  await once(c, template, network); // warm-up: page cache, base
  for (let i = 0; i < RUNS; i++) {
    if (pool) await poolReady(c, template, pool);
    if (settleMs) await new Promise((r) => setTimeout(r, settleMs));
    const r = await once(c, template, network);
    if (!!pool !== r.claimed) throw new Error(`a create ${pool ? 'missed' : 'claimed from'} the pool`);
    handle.push(r.handle);
    output.push(r.output);
    rtt.push(r.rtt);
  }
  return { handle, output, rtt };
}

/** `runsc run` of the base rootfs printing hi, no daemon: spawn to first output. */
async function plainRunsc(rootfs: string): Promise<number[]> {
  const bundle = plainBundle('/var/lib/cordon-bench/warm-floor-runsc', rootfs, ['/bin/echo', 'hi']);
  const root = '/var/lib/cordon-bench/warm-floor-root-runsc';
  const xs: number[] = [];
  for (let i = 0; i <= RUNS; i++) {
    const ms = await timeToFirstOutput('runsc', [`--root=${root}`, '--network=none', '--overlay2=root:memory', 'run', '--bundle', bundle, `warm-floor-${process.pid}-${i}`]);
    if (i > 0) xs.push(ms); // the first is a warm-up
  }
  return xs;
}

async function main() {
  await new HostNet({ slot: SLOT }).cleanup().catch(() => {});
  const fi = await startFakeInternet(SLOT);
  const d = await startDaemon('bench-warm-pool', { args: fi.daemonArgs(SLOT) });
  const c = d.client;
  try {
    console.log(`warm pool benchmark: create -> handle -> first output of "echo hi", ${RUNS} runs per figure, runtime ${(await c.info().catch(() => ({ default_runtime: 'default' })) as { default_runtime?: string }).default_runtime ?? 'default'}, ${new Date().toISOString()}`);
    await c.templates.build('bench-cold', contextTar(), {});
    await c.templates.build('bench-svc', contextTar(), { startCmd: 'python3 -m http.server 8000 --bind 127.0.0.1', readyCmd: 'curl -sf http://127.0.0.1:8000/ > /dev/null' });
    await c.templates.build('bench-warm', contextTar(), { warm: 1 });
    const cold = await series(c, 'bench-cold', 0);
    const restore = await series(c, 'bench-svc', 0);
    const warm = await series(c, 'bench-warm', 1);
    const settled = await series(c, 'bench-warm', 1, undefined, SETTLE_MS);
    await c.templates.setWarm('bench-warm', 1, { network: 1 });
    const warmNet = await series(c, 'bench-warm', 1, POLICY);
    await c.templates.setWarm('bench-warm', 0);
    if ((await fi.outsideHits()) !== 0) throw new Error('traffic left the fake internet');

    const rootfs = (await new BaseTemplate(TEMPLATES_DIR).ensure()).lowerDirs[0];
    const docker = await dockerPeer(rootfs, RUNS, (l) => console.log(l));
    const runscRun = await plainRunsc(rootfs);

    console.log(rowTail('cold template: handle', cold.handle));
    console.log(rowTail('cold template: first output', cold.output));
    console.log(rowTail('memory snapshot (service up): handle', restore.handle));
    console.log(rowTail('memory snapshot (service up): first output', restore.output));
    console.log(rowTail('warm pool claim: handle', warm.handle));
    console.log(rowTail('warm pool claim: first output', warm.output));
    const exec = warm.output.map((o, i) => o - warm.handle[i]);
    console.log(rowTail('warm pool claim: first output - handle', exec));
    console.log(rowTail('exec round trip of echo hi on the claimed sandbox', warm.rtt));
    console.log(rowTail(`warm pool claim, member idle ${SETTLE_MS} ms: handle`, settled.handle));
    console.log(rowTail(`warm pool claim, member idle ${SETTLE_MS} ms: first output`, settled.output));
    console.log(rowTail('warm pool claim + network policy: handle', warmNet.handle));
    console.log(rowTail('warm pool claim + network policy: first output', warmNet.output));
    if (docker) console.log(rowTail(`docker run (${docker.version}): first output`, docker.run));
    console.log(rowTail('plain runsc run (no daemon): first output', runscRun));
    // The goal: the first output comes one exec round trip after the handle, i.e. the first exec
    // on a claimed member costs no more than a later one (ratio about 1, not several).
    console.log(`warm claim (first output - handle) / exec round trip: ${ratio(exec, warm.rtt)}`);
    console.log(`cold / warm (first output): ${ratio(cold.output, warm.output)}`);
    console.log(`warm + network policy / warm (handle): ${ratio(warmNet.handle, warm.handle)}`);
    console.log(`snapshot / warm (first output): ${ratio(restore.output, warm.output)}`);
    if (docker) console.log(`docker run / warm (first output): ${ratio(docker.run, warm.output)}`);
    else console.log('no docker peer on this machine: plain runsc run is the peer');
    console.log(`plain runsc run / warm (first output): ${ratio(runscRun, warm.output)}`);
  } finally {
    for (const t of ['bench-warm', 'bench-svc', 'bench-cold']) await c.templates.setWarm(t, 0).catch(() => {});
    await d.cleanup();
    await new HostNet({ slot: SLOT }).cleanup().catch(() => {});
    await fi.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
