// Snapshots through the SDK and the CLI on runsc and crun: a sandbox with a file and a process that
// counts in memory is snapshotted while it runs; two sandboxes made from the snapshot both have the
// file, and under runsc the process too, counting on from the snapshot's count; all three diverge
// independently; the snapshot's storage is one layer over the source's; removal is refused while a
// sandbox stands on it; events carry durations.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { lstatSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { CLI, RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { rejectsWith, until } from './helpers/assert.js';

const run = promisify(execFile);
let d: TestDaemon;

// The count lives in the shell's memory; each value is appended to a file on the rootfs.
const COUNTER = ['sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i >> /root/count; sleep 0.2; done'];

before(async () => {
  d = await startDaemon('snapshots');
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  for (const s of await d.client.snapshots().catch(() => [])) await d.client.removeSnapshot(s.id).catch(() => {});
  await d.cleanup();
});

async function counts(s: Sandbox): Promise<number[]> {
  const r = await s.exec(['cat', '/root/count']);
  assert.equal(r.exit_code, 0, r.stderr);
  return r.stdout.trim().split('\n').filter(Boolean).map(Number);
}

/** 1, 2, 3, … with nothing missing and nothing repeated: the count never started again. */
function assertUnbroken(values: number[], what: string): void {
  values.forEach((v, i) => assert.equal(v, i + 1, `${what}: value ${i + 1} is ${v}`));
}

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { env: { ...process.env, CORDON_URL: d.url } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

for (const runtime of RUNTIMES) {
  describe(`snapshots on ${runtime}`, () => {
    const memory = runtime === 'runsc';
    let source: Sandbox;
    let a: Sandbox;
    let b: Sandbox;
    let snapId = '';
    let atSnapshot = 0;
    const name = `snap-${runtime}-${process.pid}`;

    test('snapshot a running sandbox: it keeps running, the snapshot is one layer over its source', async () => {
      source = await d.client.create({ runtime, labels: { suite: 'snapshots' } });
      assert.equal((await source.files.write('/root/file', 'from the source\n')).path, '/root/file');
      await source.startProcess(COUNTER, { tag: 'counter' });
      await until('the counter counts', async () => (await counts(source)).length >= 5);

      const snap = await source.snapshot({ name });
      snapId = snap.id;
      atSnapshot = (await counts(source)).length;
      assert.equal(snap.name, name);
      assert.equal(snap.kind, memory ? 'memory' : 'filesystem');
      assert.equal(snap.source_sandbox, source.id);
      assert.equal(snap.snapshot_id, `cordon/${name}:default`);
      // The source's own layers (the base template's) plus the copy of its writable layer.
      assert.equal(snap.layers, 2);
      const layer = join(d.dataDir, 'snapshots', snap.id, 'layer');
      assert.equal(lstatSync(join(layer, 'root', 'file')).isFile(), true, 'the written file is in the new layer');
      assert.equal(readdirSync(layer).includes('usr'), false, 'no full rootfs copy: only what the sandbox changed');

      assert.equal((await source.refresh()).state, 'running');
      await until('the source counts on', async () => (await counts(source)).length > atSnapshot + 3);
      assertUnbroken(await counts(source), 'source');
      const events = await source.events_();
      const ev = events.find((e) => e.type === 'snapshot');
      assert.ok(ev, 'a snapshot event');
      assert.equal(typeof ev.data?.duration_ms, 'number');
    });

    test('two sandboxes from the snapshot: files, and (runsc) the process counting on from the snapshot', async () => {
      a = await d.client.create({ snapshot: name, labels: { suite: 'snapshots' } });
      b = await d.client.create({ snapshot: snapId, labels: { suite: 'snapshots' } });
      for (const s of [a, b]) {
        assert.notEqual(s.id, source.id);
        assert.equal(s.info.state, 'running');
        assert.equal(s.info.runtime, runtime);
        assert.equal(s.info.snapshot, snapId);
        assert.equal((await s.files.readText('/root/file')), 'from the source\n');
      }
      if (memory) {
        for (const s of [a, b]) {
          const first = await counts(s);
          assert.ok(first.length >= 5, `the count from before the snapshot is there (${first.length})`);
          await until(`${s.id} counts on`, async () => (await counts(s)).length > first.length + 3);
          assertUnbroken(await counts(s), `sandbox made from the snapshot ${s.id}`);
          assert.ok((await s.processes()).some((p) => p.tag === 'counter' && p.running), 'the counter is listed as running');
          const restore = (await s.events_()).find((e) => e.type === 'restore');
          assert.equal(typeof restore?.data?.duration_ms, 'number');
        }
      } else {
        // crun: a fresh boot of the snapshot's files; no process was carried over.
        const v = await counts(a);
        assertUnbroken(v, 'the file as of the snapshot');
        assert.ok(v.length >= 5);
        await new Promise((r) => setTimeout(r, 1000));
        assert.equal((await counts(a)).length, v.length, 'nothing counts in a filesystem-only restore');
        assert.equal((await a.processes()).filter((p) => p.running).length, 0);
      }
    });

    test('the three diverge independently', async () => {
      assert.equal((await a.exec(['sh', '-c', 'echo a > /root/only-a'])).exit_code, 0);
      assert.equal((await b.exec(['sh', '-c', 'echo b > /root/only-b; rm /root/file'])).exit_code, 0);
      assert.equal(await a.files.exists('/root/only-b'), false);
      assert.equal(await b.files.exists('/root/only-a'), false);
      assert.equal(await source.files.exists('/root/only-a'), false);
      assert.equal(await a.files.readText('/root/file'), 'from the source\n', "b's removal is its own");
      assert.equal(await source.files.readText('/root/file'), 'from the source\n');
    });

    test('removal is refused while sandboxes stand on the snapshot, then allowed (CLI)', async () => {
      const refused = await cli('snapshot', 'rm', name);
      assert.equal(refused.code, 65, refused.stderr);
      assert.match(refused.stderr, new RegExp(`in use by sandbox ${a.id}, sandbox ${b.id}|in use by sandbox ${b.id}, sandbox ${a.id}`));
      const inspect = JSON.parse((await cli('snapshot', 'inspect', snapId)).stdout);
      assert.deepEqual(inspect.users.sandboxes.sort(), [a.id, b.id].sort());
      const ls = await cli('snapshot', 'ls', '--json');
      assert.ok(JSON.parse(ls.stdout).some((s: { id: string }) => s.id === snapId));

      await a.remove();
      await rejectsWith(d.client.removeSnapshot(snapId), 'invalid_state', new RegExp(`sandbox ${b.id}`));
      await b.remove();
      // The source is not a user: it never stood on the snapshot's layer.
      const rm = await cli('snapshot', 'rm', '--json', name);
      assert.equal(rm.code, 0, rm.stderr);
      await rejectsWith(d.client.snapshot(snapId), 'not_found');
      assert.equal(lstatSync(join(d.dataDir, 'snapshots'), { throwIfNoEntry: false })?.isDirectory(), true);
      assert.equal(readdirSync(join(d.dataDir, 'snapshots')).includes(snapId), false, 'its files are gone');
      await until('the source still counts', async () => (await counts(source)).length > atSnapshot + 10);
    });

    test('CLI: snapshot create, create --snapshot, fork', async () => {
      const made = await cli('snapshot', 'create', source.id, '--json');
      assert.equal(made.code, 0, made.stderr);
      const s = JSON.parse(made.stdout);
      const created = await cli('create', '--snapshot', s.id);
      assert.equal(created.code, 0, created.stderr);
      const child = d.client.sandbox(created.stdout.trim());
      assert.equal((await child.files.readText('/root/file')), 'from the source\n');
      const forked = await cli('fork', source.id, '--count', '2', '--json');
      assert.equal(forked.code, 0, forked.stderr);
      const forks = JSON.parse(forked.stdout) as { sandbox?: { id: string; snapshot: string } }[];
      assert.equal(forks.length, 2);
      for (const f of forks) {
        assert.ok(f.sandbox, JSON.stringify(f));
        assert.equal(await d.client.sandbox(f.sandbox.id).files.readText('/root/file'), 'from the source\n');
      }
      // A fork's snapshot is the engine's own: not listed, gone with its last fork.
      assert.equal((await d.client.snapshots()).some((x) => x.id === forks[0].sandbox!.snapshot), false);
      const forkSnapDir = join(d.dataDir, 'snapshots', forks[0].sandbox!.snapshot);
      assert.equal(lstatSync(join(forkSnapDir, 'checkpoint'), { throwIfNoEntry: false }), undefined, 'its checkpoint image went once the forks were restored');
      for (const f of forks) await d.client.remove(f.sandbox!.id, { force: true });
      await until('the fork snapshot goes with its last fork', () => lstatSync(forkSnapDir, { throwIfNoEntry: false }) === undefined);
      const forkEvent = (await source.events_()).find((e) => e.type === 'fork');
      assert.equal(typeof forkEvent?.data?.duration_ms, 'number');
      await child.remove();
      await d.client.removeSnapshot(s.id);
    });

    test('refusals: unknown snapshot 404, options that come from the snapshot 400, a stopped source 409', async () => {
      await rejectsWith(d.client.create({ snapshot: 'no-such-snapshot' }), 'not_found');
      const s = await source.snapshot();
      await rejectsWith(d.client.create({ snapshot: s.id, memory: '256m' }), 'invalid_argument', /memoryBytes|memory/);
      await rejectsWith(d.client.create({ snapshot: s.id, template: 'base' }), 'invalid_argument');
      await d.client.removeSnapshot(s.id);
      await source.stop();
      await rejectsWith(source.snapshot(), 'invalid_state', /stopped/);
      await rejectsWith(source.fork({ count: 1 }), 'invalid_state', /stopped/);
      await rejectsWith(source.snapshot({ name: 'Bad Name!' }), 'invalid_argument', /name/);
      await source.remove();
    });
  });
}

describe('a snapshot of a sandbox with a named volume', () => {
  // Decided: the volume is not copied into the snapshot. A sandbox made from it mounts the same volume at
  // the same path (a memory restore needs the same mount table) and sees its contents as they are now.
  test('the new sandbox mounts the same volume, live; the rootfs comes from the snapshot; volumes in the request are refused', async () => {
    const runtime = RUNTIMES.includes('runsc') ? 'runsc' : RUNTIMES[0];
    const vol = `snapvol-${process.pid}`;
    await d.client.volumes.create(vol, { size: '32m' });
    const src = await d.client.create({ runtime, volumes: [{ name: vol, path: '/data' }] });
    assert.equal((await src.exec(['sh', '-c', 'echo before > /data/v.txt && echo rootfs > /root/r.txt'])).exit_code, 0);
    const snap = await src.snapshot();
    assert.equal((await src.exec(['sh', '-c', 'echo after > /data/v.txt && echo changed > /root/r.txt'])).exit_code, 0);
    await rejectsWith(d.client.create({ snapshot: snap.id, volumes: [{ name: vol, path: '/other' }] }), 'invalid_argument', /volumes/);
    const made = await d.client.create({ snapshot: snap.id });
    assert.deepEqual(made.info.config.volumes.map((v) => [v.name, v.path]), [[vol, '/data']]);
    assert.equal((await made.exec(['cat', '/data/v.txt'])).stdout, 'after\n', 'the volume is live, not in the snapshot');
    assert.equal((await made.exec(['cat', '/root/r.txt'])).stdout, 'rootfs\n', 'the rootfs is the snapshot\'s');
    assert.equal((await made.exec(['sh', '-c', 'echo from-made > /data/m.txt'])).exit_code, 0);
    assert.equal((await src.exec(['cat', '/data/m.txt'])).stdout, 'from-made\n', 'both mount the one volume');
    await made.remove({ force: true });
    await src.remove({ force: true });
    await d.client.removeSnapshot(snap.id);
    await d.client.volumes.remove(vol);
  });
});

describe('snapshots across a daemon restart, and pause to disk of a sandbox made from one', () => {
  test('the snapshot survives kill -9 and restart, leftovers are swept, its sandbox pauses and resumes', async () => {
    const runtime = RUNTIMES.includes('runsc') ? 'runsc' : RUNTIMES[0];
    const src = await d.client.create({ runtime });
    await src.files.write('/root/file', 'restart\n');
    await src.startProcess(COUNTER, { tag: 'counter' });
    await until('the counter counts', async () => (await counts(src)).length >= 3);
    const snap = await src.snapshot({ name: `restart-${process.pid}` });
    // What a crash in the middle of a snapshot leaves: a directory no record names.
    mkdirSync(join(d.dataDir, 'snapshots', 'interrupted', 'layer'), { recursive: true });
    await d.stop('SIGKILL');
    await d.restart();
    assert.equal(readdirSync(join(d.dataDir, 'snapshots')).includes('interrupted'), false, 'swept at start-up');
    assert.equal((await d.client.snapshot(snap.id)).name, `restart-${process.pid}`);

    const child = await d.client.create({ snapshot: `restart-${process.pid}` });
    assert.equal(await child.files.readText('/root/file'), 'restart\n');
    const before = (await counts(child)).length;
    if (runtime === 'runsc') await until('it counts on', async () => (await counts(child)).length > before + 2);
    await child.pause();
    assert.equal((await child.refresh()).state, 'paused');
    await child.resume();
    assert.equal(await child.files.readText('/root/file'), 'restart\n');
    if (runtime === 'runsc') {
      const n = (await counts(child)).length;
      await until('it counts on after the resume', async () => (await counts(child)).length > n + 2);
      assertUnbroken(await counts(child), 'made from a snapshot, paused and resumed');
    }
    await rejectsWith(d.client.removeSnapshot(snap.id), 'invalid_state');
    await child.remove();
    await src.remove();
    await d.client.removeSnapshot(snap.id);
  });
});
