// Exec through the SDK on every runtime: synchronous runs, SSE and WebSocket streams, background
// processes (stdin, signals, reconnect with replay) and a PTY with resize.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { ProcessEvent, Sandbox } from '../src/sdk/index.js';
import { RUNTIMES_WITH_RUNC, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { rejectsWith, until } from './helpers/assert.js';

let d: TestDaemon;

before(async () => {
  d = await startDaemon('exec');
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d.cleanup();
});

/** Read events until `stop` says so (or the stream ends); returns what was seen. */
async function readUntil(it: AsyncGenerator<ProcessEvent>, stop: (seen: ProcessEvent[]) => boolean): Promise<ProcessEvent[]> {
  const seen: ProcessEvent[] = [];
  for await (const ev of it) {
    seen.push(ev);
    if (stop(seen)) break;
  }
  return seen;
}
const text = (evs: ProcessEvent[], type: 'stdout' | 'stderr' | 'pty' = 'stdout') =>
  Buffer.concat(evs.flatMap((e) => (e.type === type ? [e.data] : []))).toString();
const exitOf = (evs: ProcessEvent[]) => evs.find((e) => e.type === 'exit') as Extract<ProcessEvent, { type: 'exit' }> | undefined;

for (const runtime of RUNTIMES_WITH_RUNC) {
  describe(`exec on ${runtime}`, () => {
    let s: Sandbox;
    before(async () => {
      s = await d.client.create({ runtime, env: { FROM_SANDBOX: 'sbx' }, labels: { suite: 'exec' } });
    });
    after(async () => {
      await s?.remove().catch(() => {});
    });

    test('sync: exit code, stdout and stderr apart, env, cwd', async () => {
      const r = await s.exec(['sh', '-c', 'echo out; echo err >&2; exit 7']);
      assert.equal(r.exit_code, 7);
      assert.equal(r.stdout, 'out\n');
      assert.equal(r.stderr, 'err\n');
      assert.equal(r.timed_out, false);
      assert.ok(r.duration_ms >= 0);

      const e = await s.exec(['sh', '-c', 'echo "$FROM_SANDBOX $ONLY_HERE $FROM_SANDBOX_OVERRIDE"; pwd'], { env: { ONLY_HERE: 'cmd', FROM_SANDBOX_OVERRIDE: 'x y' }, cwd: '/usr/share' });
      assert.equal(e.stdout, 'sbx cmd x y\n/usr/share\n');
      const o = await s.exec(['sh', '-c', 'echo $FROM_SANDBOX'], { env: { FROM_SANDBOX: 'per-command wins' } });
      assert.equal(o.stdout, 'per-command wins\n');
      const missing = await s.exec(['/no/such/program']);
      assert.notEqual(missing.exit_code, 0);
    });

    test('sync: user, home, stdin bytes, timeout', async () => {
      const u = await s.exec(['sh', '-c', 'id -u; id -un; echo $HOME; cd && pwd; whoami'], { user: 'user' });
      assert.equal(u.stdout, '1000\nuser\n/home/user\n/home/user\nuser\n', u.stderr);
      // The image's own programs, never a helper's builtin of the same name (runsc wraps user commands).
      const gnu = await s.exec(['ls', '--version'], { user: 'user' });
      assert.match(gnu.stdout, /GNU coreutils/, gnu.stdout + gnu.stderr);
      const missing = await s.exec(['no-such-program-here'], { user: 'user' });
      assert.equal(missing.exit_code, 127, missing.stderr);
      const root = await s.exec(['id', '-u']);
      assert.equal(root.stdout, '0\n');
      const perm = await s.exec(['touch', '/etc/not-for-user'], { user: 'user' });
      assert.notEqual(perm.exit_code, 0, 'user is not root');

      const bytes = Buffer.alloc(70_000);
      for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + (i >> 8)) & 0xff;
      const r = await s.exec(['sh', '-c', 'sha256sum | cut -d" " -f1'], { stdin: bytes });
      assert.equal(r.stdout.trim(), createHash('sha256').update(bytes).digest('hex'), 'stdin arrives byte for byte');
      const t = await s.exec(['cat'], { stdin: 'line1\nline2' });
      assert.equal(t.stdout, 'line1\nline2');

      const to = await s.exec(['sh', '-c', 'echo before; sleep 30; echo after'], { timeout: '1s' });
      assert.equal(to.timed_out, true);
      assert.equal(to.exit_code, 124);
      assert.equal(to.stdout, 'before\n');
      const alive = await s.exec(['sh', '-c', 'ps -eo args | grep -c "[s]leep 30"']);
      assert.equal(alive.stdout.trim(), '0', 'the timed-out command was killed');
      const streamed: ProcessEvent[] = [];
      for await (const ev of s.execStream(['sleep', '30'], { timeout: '1s' })) streamed.push(ev);
      const end = streamed.at(-1);
      assert.ok(end?.type === 'exit' && end.timed_out && end.exit_code === 124, `a streamed timeout also ends with 124: ${JSON.stringify(end)}`);
    });

    test('streaming over SSE: start, output and exit in order', async () => {
      const evs: ProcessEvent[] = [];
      for await (const ev of s.execStream(['sh', '-c', 'echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three; exit 3'])) evs.push(ev);
      assert.equal(evs[0].type, 'start');
      assert.equal(evs.at(-1)!.type, 'exit');
      assert.equal(exitOf(evs)!.exit_code, 3);
      const order = evs.flatMap((e) => (e.type === 'stdout' || e.type === 'stderr' ? [`${e.type}:${e.data.toString().trim()}`] : []));
      assert.deepEqual(order.filter(Boolean), ['stdout:one', 'stderr:two', 'stdout:three']);
    });

    test('streaming over WebSocket: stdin in, events out, close stdin ends it', async () => {
      const evs: ProcessEvent[] = [];
      const { socket, done } = await s.openProcess(['sh', '-c', 'while read l; do echo "got:$l"; echo "err:$l" >&2; done; echo eof'], {}, (ev) => evs.push(ev));
      socket.write('a\n');
      await until('first echo', () => text(evs).includes('got:a'));
      socket.write('b\n');
      await until('second echo', () => text(evs).includes('got:b'));
      socket.closeStdin();
      const exit = await done;
      assert.equal(exit.exit_code, 0);
      assert.equal(evs[0].type, 'start');
      assert.equal(evs.at(-1)!.type, 'exit');
      assert.equal(text(evs), 'got:a\ngot:b\neof\n');
      assert.equal(text(evs, 'stderr'), 'err:a\nerr:b\n');
    });

    test('background processes: list, stdin, close stdin, reconnect by pid and tag with replay', async () => {
      const cat = await s.startProcess(['cat'], { tag: 'cat', stdin: true });
      assert.equal(cat.running, true);
      assert.equal(cat.tag, 'cat');
      assert.equal(cat.stdin_open, true);
      const list = await s.processes();
      assert.ok(list.some((p) => p.pid === cat.pid && p.tag === 'cat' && p.running));
      await s.sendStdin('cat', 'hello ');
      await s.sendStdin(cat.pid, 'world\n');
      // Reconnect by tag: what was written so far is replayed.
      const early = await readUntil(s.events('cat'), (seen) => text(seen) === 'hello world\n');
      assert.equal(early[0].type, 'start');
      assert.equal(text(early), 'hello world\n');
      await s.closeStdin('cat');
      await until('cat exits after EOF', async () => !(await s.process(cat.pid)).running);
      await rejectsWith(s.sendStdin('cat', 'late'), 'invalid_state', /closed/);
      // Reconnect by pid after the end: full replay and the exit.
      const all = await readUntil(s.events(cat.pid), () => false);
      assert.equal(text(all), 'hello world\n');
      assert.equal(exitOf(all)?.exit_code, 0);
      assert.equal((await s.process('cat')).exit_code, 0);
      await rejectsWith(s.process('no-such-tag'), 'not_found');
      await rejectsWith(s.process(999999), 'not_found');
    });

    test('background processes: signals reach the process', async () => {
      const p = await s.startProcess(['bash', '-c', 'trap "echo got-usr1; exit 5" USR1; echo ready; while :; do sleep 0.1; done'], { tag: 'sig' });
      await readUntil(s.events(p.pid), (seen) => text(seen).includes('ready'));
      await s.signal('sig', 'SIGUSR1');
      const evs = await readUntil(s.events('sig'), () => false);
      assert.equal(exitOf(evs)?.exit_code, 5);
      assert.match(text(evs), /got-usr1/);

      const k = await s.startProcess(['sleep', '1000'], { tag: 'victim' });
      await s.signal(k.pid, 'SIGKILL');
      const ke = exitOf(await readUntil(s.events(k.pid), () => false))!;
      assert.ok(ke.exit_code === 137 || ke.signal === 'SIGKILL', `killed: ${JSON.stringify(ke)}`);
      assert.equal((await s.processes()).find((x) => x.pid === k.pid)?.running, false);
    });

    test('PTY: output, input, resize seen by stty size', async () => {
      const evs: ProcessEvent[] = [];
      const { socket, done } = await s.openProcess(['bash', '--norc', '--noprofile', '-i'], { pty: { cols: 80, rows: 24 }, tag: 'term' }, (ev) => evs.push(ev));
      socket.write('test -t 0 && test -t 1 && echo "is a"" tty"; stty size\n');
      await until('stty size 24 80', () => /\b24 80\b/.test(text(evs, 'pty')));
      assert.match(text(evs, 'pty'), /is a tty/);
      socket.resize(120, 40);
      socket.write('stty size\n');
      await until('stty size after resize', () => /\b40 120\b/.test(text(evs, 'pty')));
      // Resize through REST as well, by tag.
      await s.resize('term', 100, 30);
      socket.write('stty size; exit 4\n');
      const exit = await done;
      assert.match(text(evs, 'pty'), /\b30 100\b/);
      assert.equal(exit.exit_code, 4);
      await rejectsWith(s.resize('cat', 10, 10), 'invalid_argument', /terminal/);
    });
  });
}
