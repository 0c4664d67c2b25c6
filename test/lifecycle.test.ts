// Sandbox lifecycle through the SDK on every runtime: create options, info, list filters, stop/start,
// pause/resume, remove, the state machine's 409s, and a sandbox that dies on its own.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { RUNTIMES_WITH_RUNC, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { rejectsWith, until } from './helpers/assert.js';

let d: TestDaemon;
const suite = `lc${Date.now()}`;

before(async () => {
  d = await startDaemon('lifecycle');
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d.cleanup();
});

for (const runtime of RUNTIMES_WITH_RUNC) {
  describe(`lifecycle on ${runtime}`, () => {
    let ro: Sandbox;
    let rw: Sandbox;

    test('create: template, env, workdir, cmd as "main", labels, read-only rootfs, tmpfs, hostname', async () => {
      ro = await d.client.create({
        template: 'base',
        runtime,
        env: { GREETING: 'hello world', EMPTY: '' },
        workdir: '/scratch',
        cmd: ['sh', '-c', 'echo "main $GREETING" > /scratch/main.out; exec sleep 100000'],
        labels: { suite, kind: 'ro', runtime },
        read_only_rootfs: true,
        tmpfs: [{ path: '/scratch', size: '16m' }],
        hostname: 'box-one',
      });
      assert.match(ro.id, /^[a-z0-9]+$/, 'ids are lowercase alphanumeric');
      assert.equal(ro.info.state, 'running');
      assert.equal(ro.info.runtime, runtime);
      assert.equal(ro.info.template, 'base');
      assert.deepEqual(ro.info.labels, { suite, kind: 'ro', runtime });
      assert.equal(ro.info.config.read_only_rootfs, true);
      assert.equal(ro.info.config.hostname, 'box-one');
      assert.equal(ro.info.config.env.GREETING, 'hello world');

      const r = await ro.exec(['sh', '-c', 'echo "$GREETING|${EMPTY-unset}"; pwd; hostname; cat /etc/hostname']);
      assert.equal(r.exit_code, 0, r.stderr);
      assert.equal(r.stdout, 'hello world|\n/scratch\nbox-one\nbox-one\n');

      const main = await ro.process('main');
      assert.equal(main.running, true);
      assert.deepEqual(main.cmd.slice(0, 2), ['sh', '-c']);
      assert.equal((await ro.exec(['cat', '/scratch/main.out'])).stdout, 'main hello world\n');

      const w = await ro.exec(['sh', '-c', 'touch /etc/should-fail']);
      assert.notEqual(w.exit_code, 0, 'the read-only rootfs refuses writes');
      assert.match(w.stderr, /Read-only file system/i);
      const t = await ro.exec(['sh', '-c', 'dd if=/dev/zero of=/scratch/blob bs=1M count=4 2>/dev/null && stat -c %s /scratch/blob && df -k /scratch | tail -1']);
      assert.equal(t.exit_code, 0, t.stderr);
      const [size, df] = t.stdout.trim().split('\n');
      assert.equal(size, String(4 * 1024 * 1024), 'the tmpfs takes writes');
      const totalKb = Number(df.trim().split(/\s+/)[1]);
      assert.ok(totalKb > 8 * 1024 && totalKb <= 16 * 1024, `tmpfs has its 16m size (${totalKb} KiB)`);
      const big = await ro.exec(['sh', '-c', 'dd if=/dev/zero of=/scratch/big bs=1M count=32']);
      assert.notEqual(big.exit_code, 0, 'the tmpfs size is enforced');
    });

    test('info and list filtered by label and state', async () => {
      rw = await d.client.create({ runtime, labels: { suite, kind: 'rw', runtime } });
      const info = await d.client.get(rw.id);
      assert.equal(info.info.id, rw.id);
      assert.equal(info.info.state, 'running');
      assert.equal(info.info.config.read_only_rootfs, false);
      assert.ok(info.info.started_at && Date.parse(info.info.started_at) >= Date.parse(info.info.created_at));

      const mine = await d.client.list({ labels: { suite, runtime } });
      assert.deepEqual(mine.map((s) => s.id).sort(), [ro.id, rw.id].sort());
      const onlyRw = await d.client.list({ labels: { suite, runtime, kind: 'rw' } });
      assert.deepEqual(onlyRw.map((s) => s.id), [rw.id]);
      assert.equal((await d.client.list({ labels: { suite, runtime, kind: 'nope' } })).length, 0);
      assert.equal((await d.client.list({ labels: { suite, runtime }, state: ['stopped'] })).length, 0);
      assert.equal((await d.client.list({ labels: { suite, runtime }, state: ['running'] })).length, 2);
    });

    test('stop is graceful (TERM first), then kills what ignores TERM; start keeps files written before stop', async () => {
      await rw.files.write('/root/keep.txt', 'kept across stop');
      await rw.startProcess(['bash', '-c', 'trap "echo got-term > /root/term.txt; exit 0" TERM; touch /tmp/ready-g; while :; do sleep 0.1; done'], { tag: 'graceful' });
      await rw.startProcess(['bash', '-c', 'trap "" TERM; touch /tmp/ready-s; while :; do sleep 0.1; done'], { tag: 'stubborn' });
      // The traps must be in place before the stop, or TERM's default action would be what we test.
      await until('both traps are installed', async () => (await rw.exec(['ls', '/tmp/ready-g', '/tmp/ready-s'])).exit_code === 0);
      const stopped = await rw.stop('2s');
      assert.equal(stopped.state, 'stopped');
      assert.equal((await d.client.list({ labels: { suite, runtime }, state: ['stopped'] })).map((s) => s.id).join(), rw.id);

      // Illegal moves while stopped.
      await rejectsWith(rw.exec(['true']), 'invalid_state', /stopped/);
      await rejectsWith(rw.files.read('/root/keep.txt'), 'invalid_state');
      await rejectsWith(rw.pause(), 'invalid_state');
      await rejectsWith(rw.resume(), 'invalid_state');

      const started = await rw.start();
      assert.equal(started.state, 'running');
      assert.equal((await rw.files.readText('/root/keep.txt')), 'kept across stop');
      assert.equal((await rw.exec(['cat', '/root/term.txt'])).stdout, 'got-term\n', 'the TERM trap ran before the kill');
      const ps = await rw.exec(['sh', '-c', 'ps -eo args | grep -c "[w]hile"']);
      assert.equal(ps.stdout.trim(), '0', 'no process survived the stop');
      assert.equal((await rw.events_()).filter((e) => e.type === 'died').length, 0, 'a stop is not reported as a death');
    });

    test('pause and resume; the state machine answers 409 to illegal moves', async () => {
      await rejectsWith(rw.start(), 'invalid_state', /running/);
      await rejectsWith(rw.resume(), 'invalid_state', /running/);
      await rw.exec(['sh', '-c', 'echo 1 > /root/counter']);
      const p = await rw.pause();
      assert.equal(p.state, 'paused');
      assert.equal((await d.client.get(rw.id)).info.state, 'paused');
      await rejectsWith(rw.exec(['true']), 'invalid_state', /paused/);
      await rejectsWith(rw.pause(), 'invalid_state');
      await rejectsWith(rw.start(), 'invalid_state');
      await rejectsWith(d.client.remove(rw.id, { force: false }), 'invalid_state');
      const r = await rw.resume();
      assert.equal(r.state, 'running');
      assert.equal((await rw.exec(['cat', '/root/counter'])).stdout, '1\n');
    });

    test('a sandbox whose container dies on its own is marked error when its runtime reports the exit', async () => {
      const s = await d.client.create({ runtime, labels: { suite, runtime, kind: 'victim' } });
      const initPid = Number(readFileSync(join(d.dataDir, 'sandboxes', s.id, 'bundle', 'init.pid'), 'utf8'));
      process.kill(initPid, 'SIGKILL');
      await until('the sandbox is marked error', async () => (await s.refresh()).state === 'error');
      assert.match(s.info.state_reason ?? '', /init process exited/);
      assert.equal((await s.events_()).filter((e) => e.type === 'died').length, 1);
      await rejectsWith(s.exec(['true']), 'invalid_state', /error/);
      await d.client.remove(s.id, { force: true });
    });

    test('remove: refused while running without force, then gone (404)', async () => {
      await rejectsWith(d.client.remove(ro.id, { force: false }), 'invalid_state', /running/);
      await rw.stop('1s');
      await d.client.remove(rw.id, { force: false });
      await rejectsWith(d.client.get(rw.id), 'not_found');
      await rejectsWith(rw.start(), 'not_found');
      await d.client.remove(ro.id, { force: true });
      await rejectsWith(ro.exec(['true']), 'not_found');
      assert.equal((await d.client.list({ labels: { suite, runtime } })).length, 0);
    });
  });
}
