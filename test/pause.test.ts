// Pause and resume through the daemon (SDK and CLI). Under runsc a pause writes the sandbox to disk:
// its container and host processes are gone (only its overlay stays mounted); a resume brings back the same
// processes (same pids, counting on in memory), files and timeout clock. The same holds across a
// daemon killed while the sandbox is paused. Under crun a pause freezes the cgroup in memory.
// A sandbox whose memory would not fit on the data directory's disk is refused (507) and runs on.
// A paused sandbox and a memory snapshot restore with the agent they ran, after an upgrade too.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { mountsMentioning, rejectsWith, sleep, until } from './helpers/assert.js';
import { AGENT_MISSING, cli, REPO, startDaemon, type TestDaemon } from './helpers/daemon.js';

let d: TestDaemon;
const suite = `pause${Date.now()}`;

// The count lives in the shell's memory; every value is appended to a file on the sandbox's tmpfs.
// A counter that started again would write 1 again; one that lost its memory would skip or repeat.
const COUNTER = 'i=0; while :; do i=$((i+1)); echo $i >> /tmp/count; sleep 0.2; done';

before(async () => {
  d = await startDaemon('pause');
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d.cleanup();
});

async function counts(sb: Sandbox): Promise<number[]> {
  const r = await sb.exec(['cat', '/tmp/count']);
  assert.equal(r.exit_code, 0, r.stderr);
  return r.stdout.trim().split('\n').filter(Boolean).map(Number);
}

function assertUnbroken(values: number[], what: string): void {
  assert.ok(values.length > 0, `${what}: no values`);
  values.forEach((v, i) => assert.equal(v, i + 1, `${what}: value ${i + 1} is ${v}`));
}

/** Host processes whose command line names the sandbox (runsc's sandbox, gofer, shim). */
function hostProcessesOf(id: string): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (cmd.includes(id) && pid !== String(process.pid)) out.push(`${pid}: ${cmd.slice(0, 200)}`);
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

async function eventsOf(sb: Sandbox, type: string) {
  return (await sb.events_()).filter((e) => e.type === type);
}

describe('pause to disk under runsc', () => {
  let sb: Sandbox;
  let counterPid: number;

  before(async () => {
    sb = await d.client.create({ runtime: 'runsc', timeout: '600s', labels: { suite }, tmpfs: [{ path: '/tmp', size: '16m' }] });
    const p = await sb.startProcess(['sh', '-c', COUNTER], { tag: 'counter' });
    counterPid = p.pid;
    await until('the counter counts', async () => (await counts(sb)).length >= 5);
    await sb.files.write('/root/before.txt', 'written before the pause');
  });

  test('pause: the container, its host processes and its mounts are gone; state paused; the clock stops', async () => {
    const expiresBefore = Date.parse((await sb.refresh()).expires_at!);
    const p = await sb.pause();
    assert.equal(p.state, 'paused');
    assert.equal(p.expires_at, null, 'no expiry while paused');
    // The pause answers once the image is complete; the container ends right after, in the background.
    await until('the container has ended', async () => (await eventsOf(sb, 'released')).length === 1);
    assert.deepEqual(hostProcessesOf(sb.id), [], 'no runsc process of the sandbox is left (its memory is freed)');
    // Its overlay stays mounted while this daemon runs (it holds no memory; a resume then needs no
    // mount); nothing else of it does.
    const mounts = mountsMentioning(`/sandboxes/${sb.id}/`);
    assert.deepEqual(mounts.filter((l) => l.split(' ')[4] !== `${d.dataDir}/sandboxes/${sb.id}/rootfs`), [], 'only its overlay stays mounted');
    await rejectsWith(sb.exec(['true']), 'invalid_state', /paused/);
    await rejectsWith(sb.stats(), 'invalid_state', /paused to disk/);
    await rejectsWith(sb.pause(), 'invalid_state', /paused/);
    const [ev] = await eventsOf(sb, 'paused');
    assert.equal(ev.data?.kind, 'disk');
    assert.ok(typeof ev.data?.ms === 'number' && typeof ev.data?.imageBytes === 'number' && (ev.data.imageBytes as number) > 0, JSON.stringify(ev));

    await sleep(1500);
    const resumeCalled = Date.now();
    const r = await sb.resume();
    assert.equal(r.state, 'running');
    // The clock stood still while paused: the time left is what it was at the pause, less at most the
    // resume itself (it runs again from the resume on), not the 1.5 s spent paused.
    const left = Date.parse(r.expires_at!) - Date.now();
    const leftAtPause = expiresBefore - Date.parse(ev.ts);
    const resumeMs = Date.now() - resumeCalled;
    assert.ok(left > leftAtPause - resumeMs - 500, `time left ${left} ms, at the pause ${leftAtPause} ms, resume took ${resumeMs} ms`);
  });

  test('resume: same process and pid counting on from memory, files kept, events with durations', async () => {
    const proc = await sb.process('counter');
    assert.equal(proc.running, true);
    assert.equal(proc.pid, counterPid, 'the same pid');
    const before = (await counts(sb)).length;
    await until('the count goes on', async () => (await counts(sb)).length >= before + 5);
    assertUnbroken(await counts(sb), 'after resume');
    assert.equal(await sb.files.readText('/root/before.txt'), 'written before the pause');
    const [resumed] = await eventsOf(sb, 'resumed');
    assert.equal(resumed.data?.kind, 'disk');
    assert.equal(typeof resumed.data?.ms, 'number');
    if (!AGENT_MISSING) assert.equal(resumed.data?.agent, true, 'the agent reconnected');
    // New commands run (through the agent, or the exec path).
    assert.equal((await sb.exec(['sh', '-c', 'echo ok'])).stdout, 'ok\n');
  });

  test('a daemon killed while the sandbox is paused: it is still paused after the restart and resumes', async () => {
    const before = (await counts(sb)).length;
    assert.equal((await cli(d, ['pause', sb.id])).code, 0);
    await d.stop('SIGKILL');
    await d.restart();
    assert.equal((await sb.refresh()).state, 'paused');
    assert.deepEqual(hostProcessesOf(sb.id), []);
    const r = await cli(d, ['resume', sb.id, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).state, 'running');
    await until('the count goes on', async () => (await counts(sb)).length >= before + 5);
    assertUnbroken(await counts(sb), 'after restart and resume');
    const proc = await sb.process('counter');
    assert.equal(proc.pid, counterPid);
    assert.equal(proc.running, true);
  });

  test('stop while paused to disk: the image goes, the files stay, start boots afresh', async () => {
    await sb.pause();
    const s = await sb.stop();
    assert.equal(s.state, 'stopped');
    const started = await sb.start();
    assert.equal(started.state, 'running');
    assert.equal(await sb.files.readText('/root/before.txt'), 'written before the pause');
    // A fresh boot: the tmpfs is empty again.
    assert.notEqual((await sb.exec(['test', '-e', '/tmp/count'])).exit_code, 0);
  });

  test('on_timeout pause: the timeout pauses instead of removing; resume gives the whole timeout again', async () => {
    const t = await d.client.create({ runtime: 'runsc', timeout: '3s', on_timeout: 'pause', labels: { suite } });
    assert.equal(t.info.config.on_timeout, 'pause');
    await until('the timeout pauses it', async () => (await t.refresh()).state === 'paused', 60_000);
    const timeoutEvents = await eventsOf(t, 'timeout');
    assert.equal(timeoutEvents.length, 1, JSON.stringify(timeoutEvents));
    const r = await t.resume();
    assert.equal(r.state, 'running');
    assert.ok(Date.parse(r.expires_at!) > Date.now(), 'the clock runs again');
    await until('its timeout pauses it again', async () => (await t.refresh()).state === 'paused', 60_000);
    await d.client.remove(t.id, { force: true });
  });
});

describe('right after a pause to disk, while its container still ends in the background', () => {
  test('a resume waits for the teardown, then brings back the same process counting on', async () => {
    const sb = await d.client.create({ runtime: 'runsc', labels: { suite }, tmpfs: [{ path: '/tmp', size: '16m' }] });
    const p = await sb.startProcess(['sh', '-c', COUNTER], { tag: 'counter' });
    await until('the counter counts', async () => (await counts(sb)).length >= 3);
    for (let round = 0; round < 3; round++) {
      const paused = await sb.pause();
      assert.equal(paused.state, 'paused');
      const resumed = await sb.resume();
      assert.equal(resumed.state, 'running');
      const events = (await sb.events_()).map((e) => e.type).filter((t) => ['paused', 'released', 'resumed', 'error'].includes(t));
      // The teardown finished before the restore began (the lock orders them), and nothing failed.
      assert.deepEqual(events.slice(-3), ['paused', 'released', 'resumed'], JSON.stringify(events));
      const before = (await counts(sb)).length;
      await until('the count goes on', async () => (await counts(sb)).length >= before + 2);
      assertUnbroken(await counts(sb), `after round ${round}`);
      assert.equal((await sb.process('counter')).pid, p.pid);
    }
    await d.client.remove(sb.id, { force: true });
  });

  test('a removal right after the pause leaves no process, mount or container', async () => {
    const sb = await d.client.create({ runtime: 'runsc', labels: { suite } });
    await sb.exec(['true']);
    await sb.pause();
    await d.client.remove(sb.id, { force: true });
    assert.deepEqual(hostProcessesOf(sb.id), [], 'no runsc process of the sandbox is left');
    assert.deepEqual(mountsMentioning(`/sandboxes/${sb.id}/`), [], 'nothing of it is mounted');
    assert.ok(!(await d.client.list()).some((s) => s.id === sb.id));
  });
});

describe('pause under crun: frozen in memory', () => {
  test('pause freezes (kind freeze), the clock stops, resume thaws the same processes', async () => {
    const sb = await d.client.create({ runtime: 'crun', timeout: '600s', labels: { suite }, tmpfs: [{ path: '/tmp', size: '16m' }] });
    const p = await sb.startProcess(['sh', '-c', COUNTER], { tag: 'counter' });
    await until('the counter counts', async () => (await counts(sb)).length >= 3);
    const paused = await sb.pause();
    assert.equal(paused.state, 'paused');
    assert.equal(paused.expires_at, null);
    assert.notDeepEqual(hostProcessesOf(sb.id), [], 'the frozen container is still there (crun cannot checkpoint)');
    const [ev] = await eventsOf(sb, 'paused');
    assert.equal(ev.data?.kind, 'freeze');
    const r = await sb.resume();
    assert.equal(r.state, 'running');
    assert.ok(Date.parse(r.expires_at!) > Date.now());
    const before = (await counts(sb)).length;
    await until('the count goes on', async () => (await counts(sb)).length >= before + 3);
    assertUnbroken(await counts(sb), 'after thaw');
    assert.equal((await sb.process('counter')).pid, p.pid);
    await d.client.remove(sb.id, { force: true });
  });
});

describe('hostile: a sandbox that fills its memory cannot fill the disk with its checkpoint', () => {
  // A daemon whose data directory is a small file system: a checkpoint holds the sandbox's memory,
  // so a pause is refused before it would fill it, and the sandbox runs on.
  let small: TestDaemon;
  const dir = `/var/lib/cordon-test/pause-smallfs-${process.pid}`;
  before(async () => {
    mkdirSync(dir, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=400m,mode=0700', 'cordon-pause-small', dir]);
    small = await startDaemon('pause-small', { args: ['--data-dir', dir] });
  });
  after(async () => {
    for (const s of await small?.client.list().catch(() => []) ?? []) await small.client.remove(s.id, { force: true }).catch(() => {});
    await small?.cleanup();
    execFileSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  });

  test('pause is refused with no_space (507) naming the sizes; the sandbox runs on', async () => {
    const h = await small.client.create({ runtime: 'runsc', memory: '512m', tmpfs: [{ path: '/tmp', size: '300m' }] });
    await h.startProcess(['sh', '-c', COUNTER], { tag: 'counter' });
    const fill = await h.exec(['sh', '-c', 'head -c 250000000 /dev/urandom > /tmp/blob && echo filled']);
    assert.equal(fill.stdout, 'filled\n', fill.stderr);
    const err = await rejectsWith(h.pause(), 'no_space', /checkpoint needs up to that plus .* free; the data directory's file system has .* free/);
    assert.equal(err.status, 507);
    assert.equal((await h.refresh()).state, 'running');
    const before = (await counts(h)).length;
    await until('the count goes on', async () => (await counts(h)).length >= before + 3);
    assertUnbroken(await counts(h), 'after the refused pause');
  });
});

describe('pause without the agent (--agent off): frozen in memory', () => {
  // gVisor cannot carry a process `runsc exec` started across a restore, and without the agent every
  // process is one: such a sandbox is frozen in memory instead, and its processes go on after resume.
  let bare: TestDaemon;
  before(async () => {
    bare = await startDaemon('pause-noagent', { args: ['--agent', 'off'] });
  });
  after(async () => {
    for (const s of await bare?.client.list().catch(() => []) ?? []) await bare.client.remove(s.id, { force: true }).catch(() => {});
    await bare?.cleanup();
  });

  test('a runsc sandbox without the agent is frozen, not checkpointed; its exec-path process counts on after resume', async () => {
    const sb = await bare.client.create({ runtime: 'runsc', tmpfs: [{ path: '/tmp', size: '16m' }] });
    await sb.startProcess(['sh', '-c', COUNTER], { tag: 'counter' });
    await until('the counter counts', async () => (await counts(sb)).length >= 3);
    await sb.files.write('/root/kept.txt', 'kept');
    await sb.pause();
    const [ev] = await eventsOf(sb, 'paused');
    assert.equal(ev.data?.kind, 'freeze', JSON.stringify(ev));
    assert.match(ev.message, /without the agent/);
    assert.equal((await sb.refresh()).state, 'paused');
    await sb.resume();
    assert.equal(await sb.files.readText('/root/kept.txt'), 'kept');
    const n = (await counts(sb)).length;
    await until('the count goes on', async () => (await counts(sb)).length >= n + 2);
    assert.equal((await sb.process('counter')).running, true);
  });
});

describe('a cordon upgrade while sandboxes are paused to disk or snapshotted', { skip: AGENT_MISSING }, () => {
  // gVisor restores a process's code from the files it is bound to again: a sandbox checkpointed with
  // one agent build and restored over another dies at once. Each keeps the programs it ran (copies in
  // the data directory); only new sandboxes get the new build.
  const dir = `/var/lib/cordon-test/pause-upgrade-${process.pid}`;
  const sha = (buf: Buffer) => createHash('sha256').update(buf).digest('hex');
  const agentSha = async (sb: Sandbox) => (await sb.exec(['sha256sum', '/.cordon/agent'])).stdout.split(' ')[0];
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('a paused sandbox and a memory snapshot restore with the agent they ran; a new sandbox gets the new one', async () => {
    const built = readFileSync(join(REPO, 'dist', 'agent', 'cordon-agent'));
    // The "upgrade": the same program with other bytes (trailing bytes are not loaded), so a different file.
    mkdirSync(dir, { recursive: true });
    const upgraded = join(dir, 'cordon-agent');
    writeFileSync(upgraded, Buffer.concat([built, randomBytes(64)]), { mode: 0o755 });
    const sb = await d.client.create({ runtime: 'runsc', timeout: '600s', labels: { suite } });
    const sleeper = await sb.startProcess(['sleep', '600'], { tag: 'sleeper' });
    assert.equal(await agentSha(sb), sha(built));
    const snap = await sb.snapshot();
    assert.equal(snap.kind, 'memory');
    await sb.pause();
    await d.stop();
    await d.restart(['--agent-binary', upgraded]);
    try {
      const fresh = await d.client.create({ runtime: 'runsc', labels: { suite } });
      assert.equal(await agentSha(fresh), sha(readFileSync(upgraded)), 'a new sandbox runs the new agent');
      await sb.resume();
      const [ev] = (await eventsOf(sb, 'resumed')).slice(-1);
      assert.equal(ev.data?.agent, true, `the agent reconnected: ${JSON.stringify(ev)}`);
      assert.equal(await agentSha(sb), sha(built), 'the resumed sandbox runs the agent it was paused with');
      assert.equal((await sb.process('sleeper')).pid, sleeper.pid);
      const fromSnap = await d.client.create({ snapshot: snap.id, labels: { suite } });
      assert.equal(await agentSha(fromSnap), sha(built), 'a sandbox from the older snapshot runs the agent it was taken with');
      assert.equal((await fromSnap.process('sleeper')).running, true);
      for (const s of [fresh, fromSnap, sb]) await s.remove({ force: true });
      await d.client.removeSnapshot(snap.id);
    } finally {
      await d.stop();
      await d.restart([]);
    }
  });

  test('a sandbox paused to disk with the agent resumes under a daemon now without one (--agent off, or an upgrade that built none)', async () => {
    const sb = await d.client.create({ runtime: 'runsc', timeout: '600s', labels: { suite } });
    const sleeper = await sb.startProcess(['sleep', '600'], { tag: 'sleeper' });
    await sb.pause();
    await d.stop();
    await d.restart(['--agent', 'off']);
    try {
      await sb.resume();
      assert.equal((await sb.process('sleeper')).pid, sleeper.pid, 'its processes came back');
      assert.equal((await sb.exec(['echo', 'ok'])).stdout.trim(), 'ok');
      await sb.remove({ force: true });
    } finally {
      await d.stop();
      await d.restart([]);
    }
  });
});
