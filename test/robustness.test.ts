// Robustness under failure: a runtime call that hangs or fails (a wrapper around crun, steered per call by
// control files), failed removals and expiries that are retried, a restart with a wedged runtime call, a
// create storm refused by admission while /v1/health stays fast, and half-created sandboxes whose shims
// must not survive a kill -9 of the daemon. The single-module cases (deadlines, locks, admission, the
// event log) are in robustness-units.test.ts.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';
import { mountsMentioning, rejectsWith, sleep, until } from './helpers/assert.js';

const WORK = `/var/lib/cordon-test/robust-ctl-${process.pid}`;
const CTL = join(WORK, 'ctl');
const WRAPPER = join(WORK, 'crun-wrapper');
const RUNTIME_TIMEOUT_S = 5;

// A file CTL/<subcommand>-<id> or CTL/<subcommand> holding "hang" or "fail" makes the next matching
// call hang or fail (taken by one call only); CTL/<subcommand>.always does so for every call.
const WRAPPER_SCRIPT = `#!/bin/bash
CTL=${JSON.stringify(CTL)}
sub=""
for a in "$@"; do case "$a" in -*) ;; *) sub="$a"; break ;; esac; done
[ -n "$sub" ] || exec crun "$@"
id="\${@: -1}"
act=""
if [ -f "$CTL/$sub.always" ]; then act=$(cat "$CTL/$sub.always"); fi
for f in "$CTL/$sub-$id" "$CTL/$sub"; do
  [ -z "$act" ] || break
  if mv "$f" "$f.taken.$$" 2>/dev/null; then act=$(cat "$f.taken.$$"); rm -f "$f.taken.$$"; fi
done
case "$act" in
  hang) exec sleep 100000 ;;
  fail) echo "wrapper: $sub failed on purpose" >&2; exit 1 ;;
esac
exec crun "$@"
`;

const control = (name: string, action: 'hang' | 'fail') => writeFileSync(join(CTL, name), action);

function cmdlines(): { pid: number; args: string[] }[] {
  const out: { pid: number; args: string[] }[] = [];
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      out.push({ pid: Number(p), args: readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0') });
    } catch {
      /* gone */
    }
  }
  return out;
}

interface Shim {
  pid: number;
  id: string;
}

/** The cordon shims running for this daemon's data dir, with their sandbox ids. */
function shimsOf(d: TestDaemon): Shim[] {
  const prefix = `${d.dataDir}/sandboxes/`;
  return cmdlines()
    .filter((p) => p.args[0] === '/usr/bin/tini-static' && p.args.includes('cordon-shim'))
    .map((p) => ({ pid: p.pid, bundle: p.args[p.args.indexOf('--bundle') + 1] ?? '' }))
    .filter((s) => s.bundle.startsWith(prefix))
    .map((s) => ({ pid: s.pid, id: s.bundle.slice(prefix.length).split('/')[0] }));
}

/** Live processes of these sessions: a shim leads one, and its shell, sleep and runtime calls live in it. */
function sessionMembers(sids: number[]): string[] {
  const out: string[] = [];
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (sids.includes(Number(f[3])) && f[0] !== 'Z') out.push(`${p} ${readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ').slice(0, 120)}`);
    } catch {
      /* gone */
    }
  }
  return out;
}

/** What this daemon holds on the host, per sandbox id: directories, crun containers, shims, mounts. */
function hostState(d: TestDaemon) {
  const crunRoot = join(d.dataDir, 'run', 'crun');
  return {
    dirs: readdirSync(join(d.dataDir, 'sandboxes')).sort(),
    containers: existsSync(crunRoot) ? readdirSync(crunRoot).filter((n) => n !== 'exec').sort() : [],
    shims: shimsOf(d).map((s) => s.id).sort(),
    mounts: mountsMentioning(`${d.dataDir}/sandboxes/`).length,
  };
}

/**
 * The host holds exactly the sandboxes `ids` for this daemon, and nothing is left of the shims in
 * `former` (a snapshot taken earlier) that belonged to other sandboxes.
 */
async function assertHostHoldsOnly(d: TestDaemon, ids: string[], former: Shim[] = []) {
  const want = [...ids].sort();
  await until('the host holds only the sandboxes that have records', () => {
    const s = hostState(d);
    return JSON.stringify([s.dirs, s.containers, s.shims]) === JSON.stringify([want, want, want]);
  }, 30_000).catch(() => assert.deepEqual(hostState(d), { dirs: want, containers: want, shims: want, mounts: 0 }));
  for (const id of ids) assert.ok(mountsMentioning(id).length > 0, `${id} keeps its rootfs mount`);
  const gone = former.filter((s) => !ids.includes(s.id)).map((s) => s.pid);
  await until('no process is left of the removed shims', () => sessionMembers(gone).length === 0, 10_000).catch(() =>
    assert.deepEqual(sessionMembers(gone), [], 'processes left behind by removed shims'),
  );
}

before(() => {
  rmSync(WORK, { recursive: true, force: true });
  mkdirSync(CTL, { recursive: true });
  writeFileSync(WRAPPER, WRAPPER_SCRIPT);
  chmodSync(WRAPPER, 0o755);
});
after(() => rmSync(WORK, { recursive: true, force: true }));

describe('a wedged or failing runtime', () => {
  let d: TestDaemon;
  const live: Sandbox[] = [];
  before(async () => {
    d = await startDaemon('robust', { args: ['--runtime', 'crun', '--runtime-binary', `crun=${WRAPPER}`, '--runtime-timeout', `${RUNTIME_TIMEOUT_S}s`] });
  });
  after(async () => {
    rmSync(CTL, { recursive: true, force: true });
    mkdirSync(CTL, { recursive: true });
    for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
    await d.cleanup();
  });

  test('a create that hangs fails at the deadline and leaves nothing; other sandboxes work meanwhile', async () => {
    live.push(await d.client.create({ labels: { role: 'bystander' } }));
    control('create', 'hang');
    const hung = d.client.create({ labels: { role: 'hung' } });
    hung.catch(() => {});
    await until('the wrapper took the hang', () => !existsSync(join(CTL, 'create')));
    const shims = shimsOf(d);
    assert.equal(shims.length, 2, 'the bystander and the hung create each have a shim');
    const r = await live[0].exec(['echo', 'still serving']);
    assert.equal(r.stdout, 'still serving\n');
    live.push(await d.client.create({ labels: { role: 'created while another create hangs' } }));

    const err = await rejectsWith(hung, 'deadline_exceeded', new RegExp(`crun create did not finish within ${RUNTIME_TIMEOUT_S}s and was killed`));
    assert.match(err.message, /rolled back/);
    assert.equal(err.status, 504);
    const list = await d.client.list();
    assert.deepEqual(list.map((s) => s.id).sort(), live.map((s) => s.id).sort(), 'no record of the failed create');
    await assertHostHoldsOnly(d, live.map((s) => s.id), shims);
  });

  test('a removal that fails leaves an error record saying so; a retry finishes it', async () => {
    const s = await d.client.create({ labels: { role: 'removed twice' } });
    const shims = shimsOf(d);
    control(`delete-${s.id}`, 'fail');
    const err = await rejectsWith(d.client.remove(s.id, { force: true }), 'internal', /removal failed: .*failed on purpose/);
    assert.match(err.message, /retry/);
    const info = await s.refresh();
    assert.equal(info.state, 'error');
    assert.match(info.state_reason ?? '', /^removal failed: .*retry with cordon rm -f/);
    await d.client.remove(s.id, { force: true });
    await rejectsWith(s.refresh(), 'not_found');
    await assertHostHoldsOnly(d, live.map((s) => s.id), shims);
  });

  test('an expiry whose removal fails is retried until the sandbox is gone', async () => {
    const s = await d.client.create({ labels: { role: 'expires' }, timeout: '2s' });
    const shims = shimsOf(d);
    control(`delete-${s.id}`, 'fail');
    await until('the failed expiry is recorded', async () => (await s.events_()).some((e) => /removing the expired sandbox failed/.test(e.message)), 60_000);
    await until('the retried expiry removed it', () => s.refresh().then(() => false, (e: { code?: string }) => e.code === 'not_found'), 60_000);
    await assertHostHoldsOnly(d, live.map((s) => s.id), shims);
  });

  test('a restart with a wedged runtime call fails only that sandbox; the others are reconciled and work', async () => {
    const wedged = await d.client.create({ labels: { role: 'wedged at restart' } });
    const shims = shimsOf(d);
    await d.stop('SIGKILL');
    control(`state-${wedged.id}`, 'hang');
    await d.restart();
    for (const s of live) {
      assert.equal((await s.refresh()).state, 'running');
      assert.equal((await s.exec(['echo', 'reconciled'])).stdout, 'reconciled\n');
    }
    const info = await wedged.refresh();
    assert.equal(info.state, 'error');
    assert.match(info.state_reason ?? '', /could not check .*crun state did not finish within/);
    assert.match(d.log(), new RegExp(`sandbox ${wedged.id}: the daemon could not check`));
    await d.client.remove(wedged.id, { force: true });
    await assertHostHoldsOnly(d, live.map((s) => s.id), shims);
  });
});

interface Answer {
  status: number;
  code?: string;
  retryAfter: string | null;
}

async function postCreate(url: string, path = '/v1/sandboxes'): Promise<Answer> {
  const req = path === '/sandboxes' ? JSON.stringify({ templateID: 'base' }) : '{}';
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: req });
  const body = (await res.json().catch(() => ({}))) as { code?: string | number };
  return { status: res.status, code: body.code === undefined ? undefined : String(body.code), retryAfter: res.headers.get('retry-after') };
}

/** Poll /v1/health back to back until `stop` resolves; returns each answer's status and latency. */
async function pollHealth(url: string, stop: Promise<unknown>): Promise<{ status: number; ms: number }[]> {
  const out: { status: number; ms: number }[] = [];
  let done = false;
  void stop.finally(() => (done = true));
  while (!done) {
    const t0 = performance.now();
    const status = await fetch(`${url}/v1/health`, { signal: AbortSignal.timeout(10_000) }).then((r) => r.status, () => 0);
    out.push({ status, ms: performance.now() - t0 });
    await sleep(25);
  }
  return out;
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];

describe('admission under a create storm', () => {
  let d: TestDaemon;
  const CAP = 6;
  before(async () => {
    d = await startDaemon('storm', {
      args: ['--runtime', 'crun', '--runtime-binary', `crun=${WRAPPER}`, '--max-sandboxes', String(CAP), '--max-concurrent-creates', '2', '--create-queue', '2'],
    });
  });
  after(async () => {
    rmSync(CTL, { recursive: true, force: true });
    mkdirSync(CTL, { recursive: true });
    for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
    await d.cleanup();
  });

  test('parallel creates are queued, then refused with 429 + Retry-After; health answers throughout', async () => {
    const answers: Answer[] = [];
    const storm = (async () => {
      for (let round = 0; round < 6 && (await d.client.list()).length < CAP; round++) {
        answers.push(...(await Promise.all(Array.from({ length: 8 }, () => postCreate(d.url)))));
      }
      answers.push(...(await Promise.all(Array.from({ length: 4 }, () => postCreate(d.url)))));
      answers.push(await postCreate(d.url, '/sandboxes')); // the E2B control plane at the cap
    })();
    const health = await pollHealth(d.url, storm);
    await storm;
    const ms = health.map((h) => h.ms);
    console.log(`health during the storm: n=${ms.length} p50=${pct(ms, 50).toFixed(1)}ms p95=${pct(ms, 95).toFixed(1)}ms max=${Math.max(...ms).toFixed(1)}ms`);
    const tally: Record<string, number> = {};
    for (const a of answers) tally[`${a.status} ${a.code ?? ''}`] = (tally[`${a.status} ${a.code ?? ''}`] ?? 0) + 1;
    console.log(`create answers: ${JSON.stringify(tally)}`);
    assert.ok(health.length > 0);
    for (const h of health) {
      assert.equal(h.status, 200);
      assert.ok(h.ms < 2000, `health answered in ${h.ms} ms`);
    }
    for (const a of answers) assert.ok(a.status === 201 || a.status === 429, `unexpected answer ${JSON.stringify(a)}`);
    assert.equal(answers.filter((a) => a.status === 201).length, CAP, 'exactly the cap was created');
    const queueFull = answers.filter((a) => a.code === 'rate_limited');
    assert.ok(queueFull.length > 0, 'some creates found the queue full');
    for (const a of queueFull) assert.equal(a.retryAfter, '1');
    const atCap = answers.filter((a) => a.code === 'too_many_sandboxes');
    assert.ok(atCap.length > 0, 'creates at the cap are refused');
    for (const a of atCap) assert.equal(a.retryAfter, '5');
    assert.deepEqual(answers.at(-1), { status: 429, code: '429', retryAfter: '5' }, 'the E2B surface sends Retry-After too');
    assert.equal((await d.client.list()).length, CAP);
  });

  test('CPU pressure past --max-cpu-pressure is refused with 503 + Retry-After', async () => {
    const hot = await startDaemon('storm-psi', { args: ['--runtime', 'crun', '--max-cpu-pressure', '1'] });
    const burners: ReturnType<typeof spawn>[] = [];
    try {
      const avg10 = () => Number(/^some avg10=([\d.]+)/m.exec(readFileSync('/proc/pressure/cpu', 'utf8'))![1]);
      // The shared machine is usually busy enough; if not, make it so for a few seconds.
      if (avg10() < 5) for (let i = 0; i < 4; i++) burners.push(spawn('sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' }));
      await until('CPU pressure is visible', () => avg10() >= 5, 60_000);
      const a = await postCreate(hot.url);
      assert.deepEqual({ status: a.status, code: a.code, retryAfter: a.retryAfter }, { status: 503, code: 'insufficient_resources', retryAfter: '5' });
      assert.deepEqual(await hot.client.list(), [], 'nothing was created');
    } finally {
      for (const b of burners) b.kill('SIGKILL');
      await hot.cleanup();
    }
  });

  test('half-created sandboxes lose their shims when the daemon is killed and restarted mid-storm', async () => {
    const before = await d.client.list();
    const earlier = shimsOf(d);
    for (const s of before.slice(3)) await d.client.remove(s.id, { force: true });
    const kept = before.slice(0, 3).map((s) => s.id);
    control('create.always', 'hang');
    const storm = Array.from({ length: 4 }, () => postCreate(d.url).catch(() => undefined));
    await until('creates hang inside their shims', () => shimsOf(d).length >= kept.length + 2);
    const shims = shimsOf(d);
    await d.stop('SIGKILL');
    await Promise.all(storm);
    rmSync(join(CTL, 'create.always'));
    await d.restart();
    const records = await d.client.list();
    assert.deepEqual(records.map((s) => s.id).sort(), [...kept].sort(), 'only the sandboxes that were running remain');
    for (const s of records) assert.equal(s.state, 'running');
    await assertHostHoldsOnly(d, kept, [...earlier, ...shims]);
    assert.equal(shimsOf(d).length, kept.length, 'one shim per running sandbox, none for the half-created ones');
  });
});
