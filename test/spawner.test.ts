// The daemon's process starter (cordon-spawner) against Node's own spawn: every call `run` makes must
// come back the same either way (output, exit code, signal, start errors, the deadline killing the
// program's whole group), and a spawner that dies must fail only the calls it held. Real binary, no daemon.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { pidAlive, run, sleep, startDetached, useSpawner, type RunOptions } from '../src/util/proc.js';
import { BUILT_SPAWNER, Spawner } from '../src/util/spawner.js';
import { CordonError } from '../src/errors/registry.js';

describe('cordon-spawner', { skip: !existsSync(BUILT_SPAWNER) && 'cordon-spawner was not built (no Go toolchain)' }, () => {
  let spawner: Spawner;
  let dir: string;
  const logs: string[] = [];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'cordon-spawner-'));
    spawner = Spawner.start(BUILT_SPAWNER, (m) => logs.push(m))!;
  });
  after(() => {
    useSpawner(undefined);
    spawner?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The same call through Node's spawn and through the spawner: both outcomes, settled. */
  async function both(cmd: string, args: string[], opts: RunOptions = {}) {
    const settle = (p: Promise<unknown>) => p.then((v) => ({ ok: v }), (e: NodeJS.ErrnoException) => ({ err: e.code ?? e.message }));
    useSpawner(undefined);
    const node = await settle(run(cmd, args, opts));
    useSpawner(spawner);
    const through = await settle(run(cmd, args, opts));
    useSpawner(undefined);
    // A spawner that died would make both calls Node's, and every comparison pass.
    assert.equal(spawner.alive, true, `the spawner died during ${cmd} ${args.join(' ')}: ${logs.join('\n')}`);
    return { node, through };
  }

  test('output, exit codes, stdin, cwd and environment come back as from Node spawn', async () => {
    const cases: Array<[string, string[], RunOptions]> = [
      ['sh', ['-c', 'echo out; echo err >&2; exit 3'], {}],
      ['cat', [], { input: 'abc\n\u00e9' }],
      ['cat', [], { input: Buffer.from([0, 1, 2, 255]) }],
      ['cat', [], {}],
      ['pwd', [], { cwd: '/usr' }],
      ['sh', ['-c', 'echo "$FOO ${HOME-unset}"; env | sort'], { env: { FOO: 'bar baz', PATH: '/usr/bin:/bin', NOPE: undefined } }],
      ['sh', ['-c', 'echo "$PATH $HOME"'], {}],
      ['sh', ['-c', 'kill -TERM $$'], {}],
      ['sh', ['-c', 'exit 255'], {}],
      ['true', [], { timeoutMs: 2_500.5 }],
      // Past a timer's range: the deadline is the range's end (Node's own timer would fire at once).
      ['sh', ['-c', 'sleep 0.2; echo slept'], { timeoutMs: Infinity }],
      ['sh', ['-c', 'sleep 0.2; echo slept'], { timeoutMs: 2 ** 40 }],
      // The spawner's own signal handling must not reach its programs (no signal ignored or blocked).
      ['sh', ['-c', 'grep -E "^Sig(Ign|Blk)" /proc/self/status'], {}],
    ];
    for (const [cmd, args, opts] of cases) {
      const { node, through } = await both(cmd, args, opts);
      assert.deepEqual(through, node, `${cmd} ${args.join(' ')}`);
    }
    // A request the spawner cannot read fails at once, under its own id (not at its timeout, unanswered).
    const unreadable = await spawner.run({ path: 'true', args: [], timeoutMs: 60_000, maxOutput: 0.5 }, 'unreadable').then(
      () => 'answered',
      (e: NodeJS.ErrnoException) => e.code,
    );
    assert.equal(unreadable, 'EINVAL');
    const sig = await both('sh', ['-c', 'kill -TERM $$']);
    assert.deepEqual(sig.through, { ok: { code: -1, signal: 'SIGTERM', stdout: '', stderr: '' } });
  });

  test('a NUL in the program, an argument or the environment, and a deadline not above 0, fail as through Node', async () => {
    const cases: Array<[string, string[], RunOptions]> = [
      ['echo', ['a\0b'], {}],
      ['ec\0ho', [], {}],
      ['sh', ['-c', 'echo $X'], { env: { X: 'a\0b' } }],
      ['true', [], { cwd: '/tmp\0x' }],
      ['true', [], { timeoutMs: 0 }],
      ['true', [], { timeoutMs: -5 }],
      ['true', [], { timeoutMs: NaN }],
    ];
    for (const [cmd, args, opts] of cases) {
      const { node, through } = await both(cmd, args, opts);
      assert.ok('err' in node, `${JSON.stringify(cmd)} ${JSON.stringify(args)} ${JSON.stringify(opts)} fails`);
      assert.deepEqual(through, node, `${JSON.stringify(cmd)} ${JSON.stringify(args)} ${String(opts.timeoutMs)}`);
    }
  });

  test('out of descriptors, a call fails with EMFILE and leaves no pipe end open (the next calls work once descriptors are free)', async () => {
    const p = spawn(BUILT_SPAWNER, [], { stdio: ['pipe', 'pipe', 'ignore'] });
    const lines = createInterface({ input: p.stdout! })[Symbol.asyncIterator]();
    const call = async (id: number) => {
      p.stdin!.write(`${JSON.stringify({ id, path: '/bin/true', args: [], timeoutMs: 5000, maxOutput: 100 })}\n`);
      return JSON.parse((await lines.next()).value as string) as { id: number; code: number; errno?: string };
    };
    const fds = () => readdirSync(`/proc/${p.pid}/fd`).length;
    try {
      assert.equal((await call(1)).code, 0);
      const open = fds();
      // Room for two of the three pipes: the third fails, after two were made.
      execFileSync('prlimit', ['--pid', String(p.pid), `--nofile=${open + 4}:`]);
      for (let id = 2; id < 5; id++) assert.equal((await call(id)).errno, 'EMFILE');
      assert.equal(fds(), open, 'no pipe end left open');
      execFileSync('prlimit', ['--pid', String(p.pid), '--nofile=1024:']);
      assert.equal((await call(5)).code, 0);
    } finally {
      p.kill('SIGKILL');
    }
  });

  test('a program looked up on the PATH it runs with, and start errors named as Node names them', async () => {
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'only-here'), '#!/bin/sh\necho found "$0"\n');
    chmodSync(join(bin, 'only-here'), 0o755);
    writeFileSync(join(bin, 'not-exec'), '#!/bin/sh\necho no\n');
    // An environment without PATH searches the same default (mkfs.ext4 lives in /usr/sbin).
    const noPath = await both('mkfs.ext4', ['-V'], { env: { FOO: 'x' } });
    assert.deepEqual(noPath.through, noPath.node);
    const env = { PATH: `${bin}:/usr/bin:/bin` };
    const found = await both('only-here', [], { env });
    assert.deepEqual(found.through, found.node);
    assert.deepEqual(found.through, { ok: { code: 0, signal: null, stdout: `found ${bin}/only-here\n`, stderr: '' } });
    for (const [cmd, code] of [['only-here', 'ENOENT'], ['no-such-program-cordon', 'ENOENT'], [join(bin, 'not-exec'), 'EACCES'], [join(dir, 'missing', 'x'), 'ENOENT']] as const) {
      const r = await both(cmd, [], {});
      assert.deepEqual(r.through, { err: code }, cmd);
      assert.deepEqual(r.node, { err: code }, cmd);
    }
  });

  test('the deadline kills the program and its group and names the call', async () => {
    const pidFile = join(dir, 'grandchild');
    useSpawner(spawner);
    const err = await run('sh', ['-c', `sleep 60 & echo $! > ${pidFile}; wait`], { timeoutMs: 500, label: 'a wedged helper' }).then(
      () => assert.fail('a program past its deadline must fail the call'),
      (e: CordonError) => e,
    );
    useSpawner(undefined);
    assert.equal(err.code, 'deadline_exceeded');
    assert.match(err.message, /a wedged helper did not finish within 0\.5s/);
    const grandchild = Number(readFileSync(pidFile, 'utf8'));
    for (let i = 0; i < 50 && pidAlive(grandchild); i++) await sleep(20);
    assert.equal(pidAlive(grandchild), false, 'the program group is killed, not only its leader');
  });

  test('a program that floods its output gets the same cap and does not stall', async () => {
    const { node, through } = await both('sh', ['-c', 'head -c 6000000 /dev/zero | tr "\\0" a; echo done >&2']);
    assert.deepEqual(through, node);
    const r = (through as { ok: { stdout: string; stderr: string } }).ok;
    assert.equal(r.stdout.length, 4 * 1024 * 1024);
    assert.equal(r.stderr, 'done\n');
  });

  test('a program whose descendant holds its stdin unread ends when the program does, as with Node', async () => {
    // More input than a pipe holds, and a descendant in another session that keeps stdin but never reads it.
    const script = 'exec 3<&0; setsid sleep 30 <&3 >/dev/null 2>&1 & echo $!';
    for (const s of [undefined, spawner]) {
      useSpawner(s);
      const r = await run('sh', ['-c', script], { input: Buffer.alloc(300_000, 97), timeoutMs: 3_000 }).then(
        (v) => v,
        (e: Error) => e,
      );
      useSpawner(undefined);
      assert.ok(!(r instanceof Error), `${s ? 'spawner' : 'node'}: ${String(r)}`);
      process.kill(Number(r.stdout), 'SIGKILL');
      assert.equal(r.code, 0);
    }
    assert.equal(spawner.alive, true);
  });

  test('concurrent calls each get their own answer', async () => {
    useSpawner(spawner);
    const outs = await Promise.all(Array.from({ length: 40 }, (_, i) => run('sh', ['-c', `sleep 0.0${i % 10}; echo ${i}; exit ${i % 7}`])));
    useSpawner(undefined);
    outs.forEach((r, i) => {
      assert.equal(r.stdout, `${i}\n`);
      assert.equal(r.code, i % 7);
    });
  });

  test('options the spawner does not carry are started by Node itself', async () => {
    useSpawner(spawner);
    const through = await run('sh', ['-c', 'echo $PPID']);
    const r = await run('sh', ['-c', 'echo $PPID'], { stdio: 'pipe' } as RunOptions);
    useSpawner(undefined);
    assert.equal(Number(through.stdout), spawner.pid, 'a plain call is started by the spawner');
    assert.equal(Number(r.stdout), process.pid);
  });

  test('a stop signal to the daemon\'s process group (Ctrl-C, a service manager) leaves the spawner serving', async () => {
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.kill(spawner.pid!, sig);
    useSpawner(spawner);
    const r = await run('sh', ['-c', 'echo $PPID']);
    useSpawner(undefined);
    assert.equal(spawner.alive, true, logs.join('\n'));
    assert.equal(Number(r.stdout), spawner.pid, 'still started by the spawner');
  });

  test('a detached program (the shim) logs to its file, leads its own session, and its end is reported and reaped', async () => {
    const log = join(dir, 'shim.log');
    // A detached program does not keep its starter alive (it outlives the daemon): the test must.
    const keepAlive = setInterval(() => {}, 1000);
    try {
      for (const s of [undefined, spawner]) {
        useSpawner(s);
        writeFileSync(log, 'old content that the start truncates\n');
        const c = await startDetached('sh', ['-c', 'echo out; echo err >&2; ps -o sid= -p $$; exit 7'], { log, label: 'shim' });
        assert.deepEqual(await c.exited, { code: 7, signal: null });
        const [out, err, sid] = readFileSync(log, 'utf8').trim().split('\n');
        assert.deepEqual([out, err, Number(sid)], ['out', 'err', c.pid], 'output to the log, in a session of its own');
        const k = await startDetached('sleep', ['30'], { log, label: 'shim' });
        process.kill(k.pid, 'SIGTERM');
        assert.deepEqual(await k.exited, { code: -1, signal: 'SIGTERM' });
        assert.equal(pidAlive(k.pid), false, 'reaped, not left a zombie');
        const missing = await startDetached('no-such-program-cordon', [], { log, label: 'shim' }).then(() => 'started', (e: NodeJS.ErrnoException) => e.code);
        assert.equal(missing, 'ENOENT');
      }
    } finally {
      clearInterval(keepAlive);
    }
    useSpawner(spawner);
    // The bundle directory is the daemon's; still, its log is never opened through a symlink.
    const target = join(dir, 'elsewhere');
    writeFileSync(target, 'keep');
    symlinkSync(target, join(dir, 'link.log'));
    const linked = await startDetached('true', [], { log: join(dir, 'link.log'), label: 'shim' }).then(() => 'started', (e: NodeJS.ErrnoException) => e.code);
    useSpawner(undefined);
    assert.equal(linked, 'ELOOP');
    assert.equal(readFileSync(target, 'utf8'), 'keep');
  });

  test('a spawner that stops answering is ended: its calls fail, later ones start without it', async () => {
    // A stand-in that reads its requests and never answers.
    const mute = join(dir, 'mute-spawner');
    writeFileSync(mute, '#!/bin/sh\nexec cat > /dev/null\n');
    chmodSync(mute, 0o755);
    for (const call of ['run', 'startDetached'] as const) {
      const wedged = Spawner.start(mute, (m) => logs.push(m), { graceMs: 300 })!;
      useSpawner(wedged);
      const held = call === 'run' ? run('true', [], { timeoutMs: 100, label: 'a mute call' }) : startDetached('true', [], { log: join(dir, 'mute.log'), label: 'a mute call' });
      const err = await held.then(() => assert.fail('a mute spawner cannot answer'), (e: CordonError) => e);
      assert.equal(err.code, 'internal');
      assert.match(err.message, /a mute call: the daemon's process starter \(cordon-spawner\) did not (answer|start it) within/);
      for (let i = 0; i < 50 && wedged.alive; i++) await sleep(20);
      assert.equal(wedged.alive, false, `${call}: the mute spawner is ended`);
      const next = await run('sh', ['-c', 'echo $PPID']);
      useSpawner(undefined);
      assert.equal(Number(next.stdout), process.pid);
    }
  });

  test('a spawner that dies fails the calls it held, and later calls start without it', async () => {
    const doomed = Spawner.start(BUILT_SPAWNER, (m) => logs.push(m))!;
    useSpawner(doomed);
    const held = run('sleep', ['3'], { label: 'held call' });
    await sleep(100);
    process.kill(doomed.pid!, 'SIGKILL');
    const err = await held.then(() => assert.fail('the held call cannot have an answer'), (e: CordonError) => e);
    assert.equal(err.code, 'internal');
    assert.match(err.message, /cordon-spawner/);
    assert.equal(doomed.alive, false);
    const after = await run('sh', ['-c', 'echo $PPID']);
    useSpawner(undefined);
    assert.equal(Number(after.stdout), process.pid, 'started by Node once the spawner is gone');
    assert.ok(logs.some((l) => /cordon-spawner exited/.test(l)), logs.join('\n'));
  });

  test('answers a spawner wrote before it died are still delivered', async () => {
    // A stand-in that answers one call and dies at once: its exit can reach Node before its answer is read.
    const fake = join(dir, 'answers-then-dies');
    writeFileSync(fake, '#!/bin/sh\nread line\nid=${line#*\\"id\\":}\nprintf \'{"id":%s,"code":5}\\n\' "${id%%,*}"\nkill -9 $$\n');
    chmodSync(fake, 0o755);
    const outcomes: Array<number | string> = [];
    for (let i = 0; i < 30; i++) {
      const s = Spawner.start(fake, () => {})!;
      const call = s.run({ path: 'true', args: [], timeoutMs: 5_000, maxOutput: 0 }, 'answered then died');
      // Keep the event loop busy so both the exit and the answer are waiting when it looks.
      for (const t = Date.now(); Date.now() - t < 20; );
      outcomes.push(await call.then((a) => a.code, (e: Error) => e.message));
    }
    assert.deepEqual(outcomes.filter((o) => o !== 5), [], 'every call got the answer its spawner wrote');
  });

  test('a spawner binary that cannot be started is reported as absent, not failing the first calls', async () => {
    const notExec = join(dir, 'not-executable');
    writeFileSync(notExec, 'not a program');
    const said: string[] = [];
    assert.equal(Spawner.start(notExec, (m) => said.push(m)), undefined);
    await sleep(50);
    assert.match(said.join('\n'), /cannot be started .*EACCES/);
  });
});

