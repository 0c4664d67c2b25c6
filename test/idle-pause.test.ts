// serve --idle-pause: a sandbox with no activity for the idle time is frozen in memory (under runsc its
// kernel too: no CPU), then after --idle-pause-disk paused to disk under runsc, each step with an
// idle-pause event, and the next call (REST exec, E2B envd, also after a daemon restart) resumes it
// before it is served: the caller sees an answer, and a process counting in memory counts on from
// where it was. Output of an API process keeps a sandbox awake; idle_pause:false opts out; reading a
// sandbox from outside (inspect) does not keep it awake.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Sandbox as E2bSandbox } from 'e2b';
import type { Sandbox } from '../src/sdk/index.js';
import { sleep, until } from './helpers/assert.js';
import { cli, startDaemon, type TestDaemon } from './helpers/daemon.js';

const IDLE_MS = 3000;
const DISK_AFTER_MS = 8000;
let d: TestDaemon;
const suite = `idle${Date.now()}`;
// Counts in the shell's memory, appending each value to a file; it writes nothing to stdout.
const COUNTER = 'i=0; while :; do i=$((i+1)); echo $i >> /tmp/count; sleep 0.2; done';

before(async () => {
  d = await startDaemon('idle-pause', { args: ['--idle-pause', `${IDLE_MS / 1000}s`, '--idle-pause-disk', `${DISK_AFTER_MS / 1000}s`] });
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

async function eventsOf(sb: Sandbox, type: string) {
  return (await sb.events_()).filter((e) => e.type === type);
}

async function state(sb: Sandbox): Promise<string> {
  return (await sb.refresh()).state;
}

describe('idle pause under runsc', () => {
  test('an idle sandbox is frozen (no CPU), then paused to disk; a REST exec resumes it and the counter counts on', async () => {
    const sb = await d.client.create({ runtime: 'runsc', timeout: '600s', labels: { suite }, tmpfs: [{ path: '/tmp', size: '16m' }] });
    const p = await sb.startProcess(['sh', '-c', COUNTER], { tag: 'counter' });
    await until('the counter counts', async () => (await counts(sb)).length >= 3);
    // Inspecting is not activity: polling state must not keep it awake.
    await until('idle-paused', async () => (await state(sb)) === 'paused', IDLE_MS * 10);
    const [frozen] = await eventsOf(sb, 'idle-pause');
    assert.equal(frozen?.data?.kind, 'freeze', 'first frozen in memory');
    // Frozen with its kernel: the sandbox's cgroup uses no CPU (an idle running one uses some).
    await sb.stats();
    await sleep(700);
    assert.equal((await sb.stats()).cpu_percent, 0, 'no CPU while frozen');
    assert.equal((await eventsOf(sb, 'idle-pause')).length, 1, 'still frozen when measured');
    await until('moved to disk', async () => (await eventsOf(sb, 'idle-pause')).some((e) => e.data?.kind === 'disk'), DISK_AFTER_MS * 10);
    assert.ok((await eventsOf(sb, 'paused')).some((e) => e.data?.kind === 'disk'), 'paused to disk under runsc');
    assert.equal(await state(sb), 'paused');

    const before = await counts(sb); // the exec resumes it first
    assert.equal(await state(sb), 'running');
    assert.ok((await eventsOf(sb, 'idle-resume')).length === 1, 'an idle-resume event');
    assertUnbroken(before, 'after the idle resume');
    await sleep(1000);
    const later = await counts(sb);
    assertUnbroken(later, 'a second later');
    assert.ok(later.length > before.length, 'the counter runs again');
    const proc = (await sb.processes()).find((x) => x.tag === 'counter');
    assert.equal(proc?.pid, p.pid, 'the same process');
    assert.equal(proc?.running, true);
    await d.client.remove(sb.id, { force: true });
  });

  test('output of an API process keeps a sandbox awake; idle_pause:false opts out; both pause once quiet', async () => {
    const talker = await d.client.create({ runtime: 'runsc', timeout: '600s', labels: { suite } });
    const made = await cli(d, ['create', '--runtime', 'runsc', '--timeout', '600s', '--label', `suite=${suite}`, '--no-idle-pause', '--json']);
    assert.equal(made.code, 0, made.stderr);
    const optOut = await d.client.get(JSON.parse(made.stdout).id);
    assert.equal(optOut.info.config.idle_pause, false, 'cordon create --no-idle-pause sends idle_pause:false');
    const chatty = await talker.startProcess(['sh', '-c', 'while :; do echo tick; sleep 0.3; done']);
    await sleep(IDLE_MS * 3);
    assert.equal(await state(talker), 'running', 'a process writing output keeps it awake');
    assert.equal(await state(optOut), 'running', 'idle_pause:false is never paused for idleness');
    assert.equal((await eventsOf(optOut, 'idle-pause')).length, 0);
    await talker.kill(chatty.id);
    await until('quiet: idle-paused', async () => (await state(talker)) === 'paused', IDLE_MS * 10);
    await d.client.remove(talker.id, { force: true });
    await d.client.remove(optOut.id, { force: true });
  });

  test('the official e2b SDK: commands.run on an idle-paused sandbox answers', async () => {
    const o = { apiKey: 'e2b_dummy', apiUrl: d.url, sandboxUrl: d.url, domain: 'cordon.invalid' };
    const sb = await E2bSandbox.create({ ...o, timeoutMs: 300_000 });
    try {
      await sb.files.write('/home/user/kept.txt', 'kept');
      await until('idle-paused', async () => (await sb.getInfo()).state === 'paused', IDLE_MS * 10);
      // A caller without the sandbox's envd token cannot wake it (nor is it served).
      const forged = await fetch(`${d.url}/process.Process/List`, {
        method: 'POST',
        headers: { 'e2b-sandbox-id': sb.sandboxId, 'x-access-token': 'not-the-token', 'content-type': 'application/json' },
        body: '{}',
      });
      assert.equal(forged.status, 401);
      await forged.text();
      assert.equal((await sb.getInfo()).state, 'paused', 'an unauthorised call does not wake it');
      const r = await sb.commands.run('cat /home/user/kept.txt && echo " awake"');
      assert.equal(r.exitCode, 0);
      assert.equal(r.stdout.trim(), 'kept awake');
      assert.equal((await sb.getInfo()).state, 'running');
    } finally {
      await sb.kill().catch(() => {});
    }
  });
});

describe('idle pause across a daemon restart', () => {
  test('a sandbox frozen for idleness before a restart is woken by the next call after it', async () => {
    const sb = await d.client.create({ runtime: 'runsc', timeout: '600s', labels: { suite } });
    await sb.exec(['sh', '-c', 'echo before > /root/mark']);
    await until('idle-paused', async () => (await state(sb)) === 'paused', IDLE_MS * 10);
    await d.stop();
    await d.restart();
    const again = await d.client.get(sb.id);
    assert.equal(again.info.state, 'paused', 'still paused after the restart');
    const r = await again.exec(['cat', '/root/mark']);
    assert.equal(r.stdout.trim(), 'before', r.stderr);
    assert.equal((await again.refresh()).state, 'running');
    assert.ok((await again.events_()).some((e) => e.type === 'idle-resume'), 'woken as an idle sandbox');
    await d.client.remove(sb.id, { force: true });
  });
});

describe('idle pause under crun: frozen, then thawed', () => {
  test('an explicit pause is not undone by the next call; after an explicit resume the idle clock starts afresh', async () => {
    const sb = await d.client.create({ runtime: 'crun', timeout: '600s', labels: { suite } });
    await sb.pause();
    await assert.rejects(sb.exec(['true']), /paused/, 'a sandbox paused by its owner stays paused');
    assert.equal(await state(sb), 'paused');
    await sb.resume();
    await sleep(IDLE_MS / 2);
    assert.equal(await state(sb), 'running', 'not paused again at once after a resume');
    await until('idle-paused after a full idle time', async () => (await state(sb)) === 'paused', IDLE_MS * 10);
    assert.equal((await sb.exec(['echo', 'up'])).stdout.trim(), 'up');
    await d.client.remove(sb.id, { force: true });
  });


  test('an idle crun sandbox is frozen in memory; a REST exec thaws it', async () => {
    const sb = await d.client.create({ runtime: 'crun', timeout: '600s', labels: { suite }, tmpfs: [{ path: '/tmp', size: '16m' }] });
    await sb.startProcess(['sh', '-c', COUNTER]);
    await until('the counter counts', async () => (await counts(sb)).length >= 3);
    await until('idle-paused', async () => (await state(sb)) === 'paused', IDLE_MS * 10);
    const [paused] = await eventsOf(sb, 'paused');
    assert.equal(paused.data?.kind, 'freeze');
    assert.equal((await eventsOf(sb, 'idle-pause')).length, 1);
    const a = await counts(sb);
    assertUnbroken(a, 'after the thaw');
    await sleep(1000);
    const b = await counts(sb);
    assert.ok(b.length > a.length, 'the counter runs again');
    assertUnbroken(b, 'a second later');
    await d.client.remove(sb.id, { force: true });
  });
});
