// State that survives: kill -9 the daemon with sandboxes running, restart it, and check records,
// live sandboxes, dead ones marked error, and that nothing leaks (mounts, cgroups, runtime state, shims).
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { mountsMentioning, rejectsWith, until } from './helpers/assert.js';

let d: TestDaemon;

before(async () => {
  d = await startDaemon('restart');
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d.cleanup();
});

/** Host processes whose command line mentions `needle` (shims, runtime helpers). */
function processesMentioning(needle: string): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    const cmd = (() => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      } catch {
        return '';
      }
    })();
    if (cmd.includes(needle)) out.push(`${pid} ${cmd}`);
  }
  return out;
}

function assertNoLeaks(id: string, runtime: string) {
  assert.deepEqual(mountsMentioning(id), [], `no mounts left for ${id}`);
  assert.equal(existsSync(`/sys/fs/cgroup/memory/cordon/${id}`), false, 'no memory cgroup left');
  assert.equal(existsSync(`/sys/fs/cgroup/pids/cordon/${id}`), false, 'no pids cgroup left');
  assert.equal(existsSync(join(d.dataDir, 'run', runtime, id)), false, `no ${runtime} state left`);
  assert.equal(existsSync(join(d.dataDir, 'sandboxes', id)), false, 'no sandbox files left');
  assert.deepEqual(processesMentioning(id), [], 'no shim or runtime process left');
}

describe('daemon kill -9 and restart', () => {
  const alive: Sandbox[] = [];
  let victim: Sandbox;
  let stopped: Sandbox;

  test('records kept, running sandboxes usable, a sandbox that died meanwhile is marked error', async () => {
    for (const runtime of RUNTIMES) {
      const s = await d.client.create({ runtime, labels: { role: 'alive' } });
      await s.files.write('/root/before.txt', `written before the crash on ${runtime}`);
      await s.startProcess(['sleep', '100000'], { tag: 'bg' });
      alive.push(s);
    }
    victim = await d.client.create({ runtime: RUNTIMES.at(-1), labels: { role: 'victim' } });
    stopped = await d.client.create({ runtime: RUNTIMES[0], labels: { role: 'stopped' } });
    await stopped.stop('1s');

    await d.stop('SIGKILL');
    // While the daemon is down, the victim's container dies.
    const initPid = Number(readFileSync(join(d.dataDir, 'sandboxes', victim.id, 'bundle', 'init.pid'), 'utf8'));
    process.kill(initPid, 'SIGKILL');
    await until('the victim init is gone', () => !existsSync(`/proc/${initPid}/status`) || /State:\s+Z/.test(readFileSync(`/proc/${initPid}/status`, 'utf8')));
    await d.restart();

    const list = await d.client.list();
    assert.deepEqual(list.map((s) => s.id).sort(), [...alive.map((s) => s.id), victim.id, stopped.id].sort(), 'every record survives');
    for (const s of alive) {
      assert.equal((await s.refresh()).state, 'running');
      const r = await s.exec(['cat', '/root/before.txt']);
      assert.equal(r.exit_code, 0, r.stderr);
      assert.match(r.stdout, /written before the crash/);
      assert.equal((await s.exec(['sh', '-c', 'ps -eo args | grep -c "^sleep 100000"'])).stdout.trim(), '1', 'its processes kept running');
    }
    const v = await victim.refresh();
    assert.equal(v.state, 'error');
    assert.match(v.state_reason ?? '', /exited|died|not running/);
    await rejectsWith(victim.exec(['true']), 'invalid_state');
    assert.deepEqual(mountsMentioning(join(d.dataDir, 'sandboxes', victim.id, 'rootfs')), [], 'the dead sandbox overlay is unmounted');
    assert.equal((await stopped.refresh()).state, 'stopped');
    assert.equal((await stopped.start()).state, 'running', 'a stopped sandbox starts after the restart');
  });

  test('no leaks after remove, after a crash, after a failed create', async () => {
    await victim.remove();
    assertNoLeaks(victim.id, RUNTIMES.at(-1)!);
    for (const s of [...alive, stopped]) {
      await s.remove();
      assertNoLeaks(s.id, s.info.runtime);
    }
    // A create that fails inside the runtime (a tmpfs below a regular file) is rolled back completely.
    for (const runtime of RUNTIMES) {
      const r = await fetch(`${d.url}/v1/sandboxes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ runtime, tmpfs: [{ path: '/etc/passwd/sub' }] }) });
      const body = await r.text();
      if (r.status < 400) await d.client.remove(JSON.parse(body).id, { force: true });
      assert.ok(r.status >= 400, `the create fails (${r.status} ${body.slice(0, 200)})`);
    }
    assert.equal((await d.client.list()).length, 0, 'no record of the failed creates');
    assert.deepEqual(readdirSync(join(d.dataDir, 'sandboxes')), [], 'no sandbox files left');
    assert.deepEqual(mountsMentioning(d.dataDir), [], 'no mounts of this daemon left');
    assert.deepEqual(processesMentioning(join(d.dataDir, 'sandboxes')), [], 'no shims of this daemon left');
  });
});
