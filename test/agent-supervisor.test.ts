// The agent's supervisor (supervisor/supervise.c, run by every agent sandbox's init): it starts the
// program it is given, starts it again after it exits, keeps trying when a fork fails (a fork bomb
// filling the pids limit), passes a stop signal on and exits, and gives its program /dev/null as
// stdio. Run on the host here, the real binary, no daemon; the sandbox side is covered by agent.test
// (an agent killed mid-command is back for the next command) and limits.test (a fork bomb).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BUILT_SUPERVISOR } from '../src/daemon.js';
import { until } from './helpers/assert.js';

describe('cordon-supervise', () => {
  let dir: string;
  const started: ChildProcess[] = [];
  const programPids: number[] = [];

  before(() => {
    assert.ok(existsSync(BUILT_SUPERVISOR), `${BUILT_SUPERVISOR} was not built (npm run build needs musl-tools or a static libc)`);
    dir = mkdtempSync(join(tmpdir(), 'cordon-supervise-'));
    chmodSync(dir, 0o777);
  });
  after(() => {
    for (const p of started) p.kill('SIGKILL');
    // The programs the supervisors started (each noted its pid), and what they left running.
    for (const pid of programPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
    rmSync(dir, { recursive: true, force: true });
  });

  /** A program that notes each start (pid and arguments) in a file, then runs the given shell body. */
  function program(name: string, body: string): { path: string; log: string } {
    const path = join(dir, name);
    const log = join(dir, `${name}.log`);
    writeFileSync(path, `#!/bin/sh\necho "$$ $*" >> ${log}\n${body}\n`);
    chmodSync(path, 0o755);
    return { path, log };
  }
  function starts(log: string): string[] {
    const lines = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : [];
    for (const l of lines) programPids.push(Number(l.split(' ')[0]));
    return lines;
  }
  function supervise(args: string[], opts: { uid?: number } = {}): ChildProcess {
    const p = spawn(BUILT_SUPERVISOR, args, { stdio: ['ignore', 'pipe', 'pipe'], uid: opts.uid, gid: opts.uid });
    started.push(p);
    return p;
  }
  const exited = (p: ChildProcess) => new Promise<number | null>((r) => (p.exitCode !== null ? r(p.exitCode) : p.once('exit', (c) => r(c))));

  test('without a program it says how to use it and exits 2', async () => {
    const p = supervise([]);
    let err = '';
    p.stderr!.on('data', (d) => (err += d));
    assert.equal(await exited(p), 2);
    assert.match(err, /usage: cordon-supervise PROGRAM/);
  });

  test('starts the program with its arguments and starts it again after it exits', async () => {
    const { path, log } = program('short', 'exit 3');
    const p = supervise([path, 'serve', 'x y']);
    await until('a second start', () => starts(log).length >= 2, 5000);
    for (const line of starts(log)) assert.match(line, /^\d+ serve x y$/);
    const [first, second] = starts(log).map((l) => Number(l.split(' ')[0]));
    assert.notEqual(first, second, 'a new process each time');
    assert.equal(p.exitCode, null, 'the supervisor runs on');
    p.kill('SIGKILL');
  });

  test('its program gets /dev/null as stdio, whatever the supervisor was given', async () => {
    const { path, log } = program('stdio', 'exec sleep 60');
    const p = supervise([path]);
    await until('the program started', () => starts(log).length === 1, 5000);
    const pid = Number(starts(log)[0].split(' ')[0]);
    for (const fd of [0, 1, 2]) assert.equal(readlinkSync(`/proc/${pid}/fd/${fd}`), '/dev/null', `fd ${fd}`);
    for (const fd of [1, 2]) assert.equal(readlinkSync(`/proc/${p.pid}/fd/${fd}`), '/dev/null', `the supervisor's own fd ${fd}`);
    p.kill('SIGKILL');
  });

  test('its program gets 0-2 on /dev/null and nothing else, also when the supervisor was started with stdin closed and another descriptor open', async () => {
    const { path, log } = program('fds', 'exec sleep 60');
    // fd 0 closed: /dev/null is opened as 0 (it must not stay close-on-exec); fd 7 open: not passed on.
    const p = spawn('sh', ['-c', `exec 0<&- 7<${path} ${BUILT_SUPERVISOR} ${path}`], { stdio: ['ignore', 'ignore', 'ignore'] });
    started.push(p);
    await until('the program started', () => starts(log).length === 1, 5000);
    const pid = Number(starts(log)[0].split(' ')[0]);
    await until('the program is sleep', () => readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sleep', 5000);
    const fds = readdirSync(`/proc/${pid}/fd`).map(Number).sort((a, b) => a - b);
    assert.deepEqual(fds, [0, 1, 2]);
    for (const fd of fds) assert.equal(readlinkSync(`/proc/${pid}/fd/${fd}`), '/dev/null', `fd ${fd}`);
    p.kill('SIGKILL');
  });

  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    test(`${sig} is passed on to the program and the supervisor exits 0`, async () => {
      const got = join(dir, `got-${sig}`);
      const { path, log } = program(`sig-${sig}`, `trap 'kill $! 2>/dev/null; echo ${sig} > ${got}; exit 0' ${sig.slice(3)}\nsleep 60 & wait`);
      const p = supervise([path]);
      await until('the program started', () => starts(log).length === 1, 5000);
      // The trap is set once the shell reaches the wait (the log line comes first).
      await until('the program waits', () => readFileSync(`/proc/${Number(starts(log)[0].split(' ')[0])}/status`, 'utf8').includes('State:\tS'), 5000);
      await new Promise((r) => setTimeout(r, 100));
      p.kill(sig);
      assert.equal(await exited(p), 0);
      await until(`the program got ${sig}`, () => existsSync(got), 5000);
      assert.equal(readFileSync(got, 'utf8').trim(), sig);
    });
  }

  test('a fork that fails (the process limit is full) is tried again until it succeeds', async () => {
    // As nobody with a process limit of 2, a filler process and the supervisor fill it: every fork
    // fails with EAGAIN until the filler ends.
    const nobody = 65534;
    const filler = spawn('sleep', ['60'], { stdio: 'ignore', uid: nobody, gid: nobody });
    started.push(filler);
    const { path, log } = program('limited', 'exec sleep 60');
    const p = spawn('prlimit', ['--nproc=2', '--', BUILT_SUPERVISOR, path], { stdio: 'ignore', uid: nobody, gid: nobody });
    started.push(p);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(p.exitCode, null, 'the supervisor runs on while forks fail');
    assert.equal(starts(log).length, 0, 'nothing could start');
    filler.kill('SIGKILL');
    await until('the program starts once a fork succeeds', () => starts(log).length === 1, 5000);
    p.kill('SIGKILL');
  });
});
