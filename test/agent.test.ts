// The agent inside every sandbox, on both runtimes: commands run under it (not `runtime exec`); an
// agent killed mid-command ends that command's stream with a clear error, an event says so and the
// next command works; processes started through it keep running while the daemon restarts and
// their output from before and after the restart is delivered; files (chmod, chown, xattrs) and
// the login-shell cache behave as without it.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ProcessEvent, Sandbox } from '../src/sdk/index.js';
import { AGENT_MISSING, RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { until } from './helpers/assert.js';

let d: TestDaemon;

before(async () => {
  d = await startDaemon('agent');
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d.cleanup();
});

const text = (evs: ProcessEvent[], type: 'stdout' | 'stderr' | 'pty' = 'stdout') => Buffer.concat(evs.flatMap((e) => (e.type === type ? [e.data] : []))).toString();

/** Read a process's events until the stream ends; returns what came and how it ended. */
async function drain(it: AsyncGenerator<ProcessEvent>, seen: ProcessEvent[] = []): Promise<{ seen: ProcessEvent[]; error?: Error & { code?: string } }> {
  try {
    for await (const ev of it) seen.push(ev);
    return { seen };
  } catch (e) {
    return { seen, error: e as Error };
  }
}

/** The agent's pid inside the sandbox (found by a command that runs under it). */
async function agentPid(s: Sandbox): Promise<number> {
  const r = await s.exec(['sh', '-c', 'echo $PPID; cat /proc/$PPID/cmdline | tr "\\0" " "']);
  const [pid, cmdline] = r.stdout.split('\n');
  assert.match(cmdline, /^\/\.cordon\/agent\b/, `the command's parent is the agent: ${r.stdout}`);
  return Number(pid);
}

for (const runtime of RUNTIMES) {
  describe(`agent on ${runtime}`, { skip: AGENT_MISSING }, () => {
    let s: Sandbox;
    before(async () => {
      s = await d.client.create({ runtime, labels: { suite: 'agent' } });
    });
    after(async () => {
      await s?.remove().catch(() => {});
    });

    test('commands run as children of the agent', async () => {
      assert.ok((await agentPid(s)) > 1);
      const u = await s.exec(['sh', '-c', 'id -u; cat /proc/self/status | grep ^Groups'], { user: 'user' });
      assert.match(u.stdout, /^1000\n/);
    });

    test('a FIFO is refused for reads and writes through the agent, and a listing past the byte bound is 413', async () => {
      assert.equal((await s.exec(['sh', '-c', 'rm -f /tmp/fifo && mkfifo /tmp/fifo'])).exit_code, 0);
      for (const [method, body] of [['GET', undefined], ['PUT', 'data']] as const) {
        const r = await fetch(`${d.url}/v1/sandboxes/${s.id}/files/content?path=/tmp/fifo`, {
          method,
          body,
          headers: { 'content-type': 'application/octet-stream' },
          signal: AbortSignal.timeout(30_000),
        });
        const text = await r.text();
        assert.equal(r.status, 400, `${method}: ${text}`);
        assert.match(text, /not a regular file/);
      }
      if (runtime !== 'crun') return; // the bound is the daemon's and the agent's, not the runtime's
      // 70 000 files below a ~1 KiB directory path: ~100 MiB of listing, past the 64 MiB bound.
      const mk = await s.exec(
        ['python3', '-c', "import os; d='/tmp/long/' + '/'.join(['x' * 250] * 4); os.makedirs(d); [open(f'{d}/f{i:06d}', 'w').close() for i in range(70000)]; print('ok')"],
        { timeout: '300s' },
      );
      assert.equal(mk.stdout.trim(), 'ok', mk.stderr);
      const big = await fetch(`${d.url}/v1/sandboxes/${s.id}/files/list?path=/tmp/long&depth=10`, { signal: AbortSignal.timeout(300_000) });
      const text = await big.text();
      assert.equal(big.status, 413, text.slice(0, 300));
      assert.match(text, /narrower directory|smaller depth/);
      const small = await fetch(`${d.url}/v1/sandboxes/${s.id}/files/list?path=/tmp/long&depth=2`);
      assert.equal(small.status, 200);
      await s.exec(['rm', '-rf', '/tmp/long']);
    });

    test('an agent killed mid-command: the stream ends with an error, an event says so, the next command works', async () => {
      const pid = await agentPid(s);
      const victim = await s.startProcess(['sh', '-c', 'echo started; sleep 30; echo never'], { tag: 'victim' });
      const seen: ProcessEvent[] = [];
      const following = drain(s.events(victim.pid), seen);
      await until('the victim printed', () => text(seen).includes('started'));
      // The killer runs under the agent too; it outlives it (an orphan) long enough to kill it.
      await s.startProcess(['sh', '-c', `sleep 0.2; kill -9 ${pid}`]);
      const { error } = await following;
      assert.ok(error, 'the stream ended without an exit event');
      assert.equal(error.code, 'unavailable', error.message);
      assert.match(error.message, /agent/);
      assert.ok(!seen.some((e) => e.type === 'exit'), 'no exit status is made up');
      // The next command works (through the exec path, then the restarted agent).
      assert.equal((await s.exec(['echo', 'after'])).stdout, 'after\n');
      await until('the agent is back', async () => (await agentPid(s).catch(() => 0)) !== pid);
      const events = await s.events_();
      assert.ok(events.some((e) => e.type === 'agent'), JSON.stringify(events.map((e) => e.message)));
      assert.equal((await s.process('victim')).running, false);
    });

    test('small reads and writes (answered on the agent\'s read loop) are exact around the inline bound, and go on while a large read is held', async () => {
      for (const size of [0, 1, 1024, 64 * 1024, 64 * 1024 + 1]) {
        const data = Buffer.alloc(size, size % 251);
        const w = await s.files.write(`/tmp/inline-${size}/f.bin`, data);
        assert.equal(w.size, size);
        assert.deepEqual(await s.files.read(`/tmp/inline-${size}/f.bin`), data, `${size} bytes read back`);
      }
      // An overwrite truncates; the reply and a read see only the new content.
      await s.files.write('/tmp/inline-1024/f.bin', 'abc');
      assert.equal((await s.files.stat('/tmp/inline-1024/f.bin')).size, 3);
      assert.equal(await s.files.readText('/tmp/inline-1024/f.bin'), 'abc');
      // A streamed read left unconsumed (its credit runs out) holds up neither small operations nor itself.
      const big = Buffer.alloc(8 * 1024 * 1024, 7);
      await s.files.write('/tmp/inline-big.bin', big);
      const held = await s.files.readStream('/tmp/inline-big.bin');
      for (let i = 0; i < 20; i++) {
        await s.files.write('/tmp/inline-1/f.bin', String(i));
        assert.equal(await s.files.readText('/tmp/inline-1/f.bin'), String(i));
      }
      const parts: Buffer[] = [];
      for await (const c of held) parts.push(c as Buffer);
      assert.ok(Buffer.concat(parts).equals(big), 'the held read delivers the whole file');
      await s.exec(['sh', '-c', 'rm -rf /tmp/inline-*']);
    });

    test('owner names follow /etc/passwd edits at once, also once the agent keeps its names under the daemon\'s key', async () => {
      const f = '/tmp/names.txt';
      await s.files.write(f, 'x');
      assert.equal((await s.files.chown(f, { uid: 4321, gid: 4321 })).owner, 'UNKNOWN');
      const sh = async (cmd: string) => assert.equal((await s.exec(['sh', '-c', cmd])).exit_code, 0, cmd);
      await sh('echo "nm1:x:4321:4321::/:/bin/sh" >> /etc/passwd');
      assert.equal((await s.files.stat(f)).owner, 'nm1', 'an append is seen by the next operation');
      // Settled (a second without change): the daemon sends its key and the agent stops checking the files.
      await new Promise((r) => setTimeout(r, 1100));
      assert.equal((await s.files.stat(f)).owner, 'nm1');
      assert.equal((await s.files.stat(f)).owner, 'nm1');
      await sh("sed -i 's/^nm1:/nm2:/' /etc/passwd"); // replaced by a rename
      assert.equal((await s.files.stat(f)).owner, 'nm2', 'a replaced file is seen by the next operation');
      await new Promise((r) => setTimeout(r, 1100));
      assert.equal((await s.files.stat(f)).owner, 'nm2');
      await sh('c=$(sed s/^nm2:/nm3:/ /etc/passwd) && printf "%s\\n" "$c" > /etc/passwd'); // rewritten in place, same size
      assert.equal((await s.files.stat(f)).owner, 'nm3', 'a rewrite in place is seen by the next operation');
      await sh("sed -i '/^nm3:/d' /etc/passwd");
      assert.equal((await s.files.stat(f)).owner, 'UNKNOWN');
    });

    test('file operations as different users, alternating, each get exactly their own identity (the agent keeps one between operations)', async () => {
      const denied = (e: Error & { code?: string }) => e.code === 'permission_denied';
      // The agent has two credential threads and hands jobs to them in turn: each step runs twice, so
      // both threads go from every identity here to the next.
      const twice = async (fn: () => Promise<unknown>) => {
        await fn();
        await fn();
      };
      await s.files.write('/tmp/ids-root', 'r', { mode: 0o600 });
      await s.files.write('/tmp/ids-grp', 'g', { mode: 0o640 });
      await s.files.chown('/tmp/ids-grp', { uid: 0, gid: 4242 });
      for (let round = 0; round < 2; round++) {
        const mine = `/tmp/ids-user-${round}`;
        await twice(async () => assert.equal((await s.files.write(mine, 'u', { user: 'user', mode: 0o600 })).owner, 'user'));
        await twice(() => assert.rejects(s.files.readText('/tmp/ids-root', { user: 'user' }), denied, "user cannot read root's file"));
        await twice(async () => assert.equal((await s.files.write(`/tmp/ids-4000-${round}`, 'n', { user: '4000' })).owner, 'UNKNOWN'));
        await twice(() => assert.rejects(s.files.chmod(mine, 0o644, { user: '4000' }), denied, "uid 4000 cannot change the user's file"));
        await twice(async () => assert.equal(await s.files.readText('/tmp/ids-grp', { user: '1000:4242' }), 'g', 'the group given is used'));
        await twice(() => assert.rejects(s.files.readText('/tmp/ids-grp', { user: 'user' }), denied, 'the same uid without that group is refused'));
        await twice(async () => assert.equal(await s.files.readText(mine, { user: 'user' }), 'u'));
        assert.equal(await s.files.readText('/tmp/ids-root'), 'r', 'root is root after them');
        assert.equal((await s.files.write(`/tmp/ids-root-${round}`, 'r')).owner, 'root');
      }
      const r = await s.exec(['sh', '-c', 'stat -c %u /tmp/ids-user-* /tmp/ids-4000-* /tmp/ids-root-*']);
      assert.deepEqual(r.stdout.trim().split('\n'), ['1000', '1000', '4000', '4000', '0', '0']);
      // Only the supplementary groups differ: user (now in group 4242 by /etc/group) and 1000:1000 (a
      // group given, so none from /etc/group).
      assert.equal((await s.exec(['sh', '-c', 'echo ids:x:4242:user >> /etc/group'])).exit_code, 0);
      try {
        for (let round = 0; round < 2; round++) {
          await twice(async () => assert.equal(await s.files.readText('/tmp/ids-grp', { user: 'user' }), 'g', 'a supplementary group counts'));
          await twice(() => assert.rejects(s.files.readText('/tmp/ids-grp', { user: '1000:1000' }), denied, 'the same uid and gid without the group is refused'));
        }
      } finally {
        await s.exec(['sh', '-c', "sed -i '/^ids:x:4242:/d' /etc/group"]);
      }
    });

    test('files: write, chmod, chown and xattrs through the agent', async () => {
      const f = await s.files.write('/tmp/agent-file.txt', 'hello', { mode: 0o640 });
      assert.equal(f.permissions, '-rw-r-----');
      assert.equal(await s.files.readText('/tmp/agent-file.txt'), 'hello');
      const listed = await s.files.list('/tmp', { depth: 1 });
      assert.ok(listed.some((e) => e.path === '/tmp/agent-file.txt' && e.size === 5));
      assert.equal((await s.files.chmod('/tmp/agent-file.txt', 0o4755)).permissions, '-rwsr-xr-x');
      const owned = await s.files.chown('/tmp/agent-file.txt', { uid: 1000, gid: 1000 });
      assert.equal(owned.owner, 'user');
      assert.equal(owned.group, 'user');
      // The user may change their own file, not root's.
      await s.files.chmod('/tmp/agent-file.txt', 0o600, { user: 'user' });
      await assert.rejects(s.files.chmod('/etc/hostname', 0o600, { user: 'user' }), (e: Error & { code?: string }) => e.code === 'permission_denied');
      // tmpfs keeps user.* attributes on both runtimes (gVisor's gofer refuses them on rootfs files,
      // /tmp included: it is part of the rootfs under runsc as under crun).
      const shm = '/dev/shm/agent-file.txt';
      await s.files.write(shm, 'x');
      await s.files.setXattr(shm, 'user.note', 'kept');
      assert.deepEqual(await s.files.listXattrs(shm), ['user.note']);
      assert.equal((await s.files.getXattr(shm, 'user.note')).toString(), 'kept');
      await s.files.removeXattr(shm, 'user.note');
      await assert.rejects(s.files.getXattr(shm, 'user.note'), (e: Error & { code?: string }) => e.code === 'not_found');
    });
  });
}

describe('daemon restart with processes started through the agent', { skip: AGENT_MISSING }, () => {
  for (const runtime of RUNTIMES) {
    test(`${runtime}: output from before and after the restart is delivered, and the exit`, async () => {
      const s = await d.client.create({ runtime, labels: { suite: 'agent' } });
      try {
        const p = await s.startProcess(['sh', '-c', 'for i in $(seq 12); do echo $i; sleep 0.5; done'], { tag: 'counter' });
        const before: ProcessEvent[] = [];
        const first = drain(s.events(p.pid), before);
        await until('a few lines before the restart', () => text(before).split('\n').length > 3);
        await d.stop('SIGKILL');
        await first;
        await d.restart();
        // The restarted daemon found the process again (the agent reconnected and reported it).
        const info = await s.process('counter');
        assert.equal(info.pid, p.pid);
        const { seen, error } = await drain(s.events('counter'));
        assert.equal(error, undefined, error?.message);
        const lines = text(seen).trim().split('\n').map(Number);
        assert.deepEqual(lines, Array.from({ length: 12 }, (_, i) => i + 1), 'every line, once, in order');
        assert.equal(seen.find((e) => e.type === 'exit')?.type, 'exit');
        // New processes do not reuse the id of the adopted one.
        const next = await s.startProcess(['true']);
        assert.notEqual(next.id, p.id);
      } finally {
        await s.remove().catch(() => {});
      }
    });
  }
});
