// Streams to clients that stop reading: the daemon's memory stays bounded (the process is paused
// through its pipes) and a client stalled past the write deadline is cut off. Also: processes keyed
// by cordon's ids (pid reuse, tag races) and streams of a sandbox that goes away mid-command.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CommandExitError, Sandbox as E2bSandbox, TimeoutError } from 'e2b';
import type { ProcessEvent, Sandbox } from '../src/sdk/index.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { sleep, until } from './helpers/assert.js';
import { envelope, openSocket, rssBytes, stallHttp, type StalledStream } from './helpers/stalled-client.js';

/** The bound: a stalled reader may not grow the daemon by this much. */
const GROWTH_LIMIT = 64 * 1024 * 1024;
/** envd's own per-send deadline; short so a cut-off is seen within the stall. */
const DEADLINE_S = 15;

let d: TestDaemon;
let e2bOpts: { apiKey: string; apiUrl: string; sandboxUrl: string; domain: string };

before(async () => {
  d = await startDaemon('backpressure', { args: ['--stream-write-deadline', `${DEADLINE_S}s`] });
  e2bOpts = { apiKey: 'e2b_dummy', apiUrl: d.url, sandboxUrl: d.url, domain: 'cordon.invalid' };
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d.cleanup();
});

const daemonRss = () => rssBytes(d.proc.pid!);

/**
 * Hold a stall for `ms`, sampling the daemon's memory against `base`; meanwhile another sandbox must
 * answer an exec. Stops early once the growth passes the limit (an unbounded daemon would go on).
 */
async function holdStall(base: number, ms: number, other: Sandbox): Promise<number> {
  let peak = 0;
  const side = (async () => {
    await sleep(ms / 3);
    const r = await other.exec(['echo', 'still answering']);
    assert.equal(r.stdout, 'still answering\n', 'another sandbox answers during the stall');
  })();
  const end = Date.now() + ms;
  while (Date.now() < end && peak <= GROWTH_LIMIT) {
    peak = Math.max(peak, daemonRss() - base);
    await sleep(500);
  }
  await side;
  return peak;
}

const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

async function healthy(): Promise<void> {
  const res = await fetch(`${d.url}/v1/health`);
  assert.equal(res.status, 200);
}

/** Kill every running process of `s` whose program is `prog`. */
async function killAll(s: Sandbox, prog: string): Promise<void> {
  for (const p of await s.processes()) if (p.running && p.cmd[0] === prog) await s.kill(p.pid).catch(() => {});
}

for (const runtime of RUNTIMES) {
  describe(`backpressure on ${runtime}`, () => {
    let s: Sandbox;
    let other: Sandbox;
    before(async () => {
      s = await d.client.create({ runtime });
      other = await d.client.create({ runtime });
    });
    after(async () => {
      await s?.remove({ force: true }).catch(() => {});
      await other?.remove({ force: true }).catch(() => {});
    });

    test('SSE: `yes` to a client that stalls 30 s keeps the daemon bounded; the client is cut at the write deadline', async () => {
      const base = daemonRss();
      let st: StalledStream | undefined;
      try {
        st = await stallHttp(`${d.url}/v1/sandboxes/${s.id}/exec`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ cmd: ['yes', 'cordon backpressure'], stream: true }),
          ready: (t) => t.includes('event: stdout'),
        });
        const peak = await holdStall(base, 30_000, other);
        assert.ok(peak < GROWTH_LIMIT, `daemon grew by ${mib(peak)} while the client stalled`);
        // `yes` never ends: once the client reads again, only a stream the daemon cut comes to an end.
        st.resume();
        await until('the daemon to have cut the stalled client off', () => st!.closed(), 60_000);
        assert.doesNotMatch(st.head, /event: exit/);
      } finally {
        st?.stop();
        await killAll(s, 'yes');
      }
      await healthy();
      assert.equal((await s.exec(['echo', 'after'])).stdout, 'after\n');
    });

    test('WebSocket: a client that pauses and resumes loses no output, and the daemon stays bounded meanwhile', async () => {
      const base = daemonRss();
      let next = 1;
      let partial = '';
      let gap: string | undefined;
      const onMessage = (text: string) => {
        const m = JSON.parse(text) as { type: string; data?: string };
        if (m.type !== 'stdout') return;
        const lines = (partial + Buffer.from(m.data!, 'base64').toString()).split('\n');
        partial = lines.pop()!;
        for (const l of lines) {
          if (gap) return;
          if (l !== String(next)) gap = `expected ${next}, got ${l.slice(0, 20)}`;
          next++;
        }
      };
      const ws = await openSocket(`${d.url.replace('http', 'ws')}/v1/sandboxes/${s.id}/exec/ws`, { cmd: ['seq', '1', '2000000000'] }, onMessage);
      try {
        await until('output to flow', () => next > 100_000, 60_000);
        ws.pause();
        const at = next;
        const peak = await holdStall(base, 10_000, other);
        assert.ok(peak < GROWTH_LIMIT, `daemon grew by ${mib(peak)} while the client paused`);
        ws.resume();
        await until('output to flow again', () => next > at + 500_000 || !!gap, 120_000);
        assert.equal(gap, undefined, 'no line is lost: the process waited instead');
        assert.equal(ws.readyState, ws.OPEN, 'a pause below the write deadline does not cut the client off');
      } finally {
        ws.terminate();
        await killAll(s, 'seq');
      }
      await healthy();
    });

    test('Connect (envd): a raw client that stops reading is cut at the write deadline with no end-of-stream', async () => {
      const e2b = await E2bSandbox.connect(s.id, e2bOpts);
      const token = (e2b as unknown as { envdAccessToken: string }).envdAccessToken;
      const base = daemonRss();
      let st: StalledStream | undefined;
      try {
        st = await stallHttp(`${d.url}/process.Process/Start`, {
          method: 'POST',
          headers: { 'content-type': 'application/connect+json', 'connect-protocol-version': '1', 'e2b-sandbox-id': s.id, 'e2b-sandbox-port': '49983', 'x-access-token': token },
          body: envelope({ process: { cmd: 'yes', args: ['cordon backpressure'] } }),
          ready: (t) => t.includes('"stdout"'),
        });
        const peak = await holdStall(base, DEADLINE_S * 1000 + 10_000, other);
        assert.ok(peak < GROWTH_LIMIT, `daemon grew by ${mib(peak)} while the client stalled`);
        st.resume();
        await until('the daemon to have cut the stalled client off', () => st!.closed(), 60_000);
      } finally {
        st?.stop();
        await killAll(s, 'yes');
      }
      await healthy();
      assert.equal((await e2b.commands.run('echo after')).stdout, 'after\n');
    });

    test('tags: of two concurrent starts with one tag exactly one wins, the other gets 409', async () => {
      for (let i = 0; i < 3; i++) {
        const tag = `race-${i}`;
        const both = await Promise.allSettled([s.startProcess(['sleep', '60'], { tag }), s.startProcess(['sleep', '60'], { tag })]);
        const won = both.filter((r) => r.status === 'fulfilled');
        const lost = both.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
        for (const w of won) await s.kill((w as PromiseFulfilledResult<{ pid: number }>).value.pid).catch(() => {});
        assert.equal(won.length, 1, `exactly one start with tag ${tag} wins`);
        assert.equal((lost[0].reason as { status: number }).status, 409);
      }
    });

    test('a sandbox removed mid-command: SSE, WebSocket and sync exec end with sandbox_gone, never an exit', async () => {
      const v = await d.client.create({ runtime });
      const seen: ProcessEvent[] = [];
      const sse = (async () => {
        for await (const ev of v.execStream(['sleep', '60'])) seen.push(ev);
      })();
      const sync = v.exec(['sleep', '60']);
      // Settled below; these keep an early rejection from counting as unhandled meanwhile.
      sse.catch(() => {});
      sync.catch(() => {});
      const wsEvents: ProcessEvent[] = [];
      const { done } = await v.openProcess(['sleep', '60'], {}, (ev) => wsEvents.push(ev));
      await until('three sleeps to run', async () => (await v.processes()).filter((p) => p.running && p.cmd[0] === 'sleep').length === 3);
      await d.client.remove(v.id, { force: true });
      const results = await Promise.allSettled([sse, sync, done]);
      assert.equal(seen.find((e) => e.type === 'exit'), undefined, 'the SSE stream has no exit event');
      assert.equal(wsEvents.find((e) => e.type === 'exit'), undefined, 'the WebSocket has no exit event');
      for (const [i, r] of results.entries()) {
        assert.equal(r.status, 'rejected', `stream ${i} ends in an error`);
        assert.equal(((r as PromiseRejectedResult).reason as { code: string }).code, 'sandbox_gone', `stream ${i}: ${(r as PromiseRejectedResult).reason}`);
      }
    });

    test('e2b: commands.run in a sandbox killed from another client rejects with TimeoutError, not CommandExitError', async () => {
      const v = await d.client.create({ runtime });
      const sbx = await E2bSandbox.connect(v.id, e2bOpts);
      const run = sbx.commands.run('sleep 60');
      run.catch(() => {});
      await until('sleep to run', async () => (await v.processes()).some((p) => p.running && p.cmd.join(' ').includes('sleep 60')));
      assert.equal(await E2bSandbox.kill(v.id, e2bOpts), true);
      const err = await run.then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(!(err instanceof CommandExitError), `not a command exit: ${err}`);
      assert.ok(err instanceof TimeoutError, `a TimeoutError, got ${err}`);
    });
  });
}

if (RUNTIMES.includes('crun')) {
  describe('pid reuse (crun)', () => {
    /** Make the sandbox's pid namespace hand out `pid` next (ns_last_pid, written from the host as root). */
    function nextPid(id: string, pid: number): void {
      const init = readFileSync(join(d.dataDir, 'sandboxes', id, 'bundle', 'init.pid'), 'utf8').trim();
      const r = spawnSync('nsenter', ['-t', init, '-p', '--', 'sh', '-c', `echo ${pid - 1} > /proc/sys/kernel/ns_last_pid`]);
      assert.equal(r.status, 0, r.stderr.toString());
    }

    test('two processes with the same pid are never confused: lookup, stdin, kill and reconnect reach the right one', async () => {
      const s = await d.client.create({ runtime: 'crun' });
      try {
        // Each process lives long enough for its pid to be read inside the sandbox's pid namespace.
        const first = await s.startProcess(['sh', '-c', 'echo first; sleep 0.5'], { stdin: false });
        await until('the first process to exit', async () => !(await s.process(first.pid)).running);
        // Where does an exec land relative to ns_last_pid? Probe once, then aim the second process at the first's pid.
        nextPid(s.id, 500);
        const probe = await s.startProcess(['sleep', '60']);
        await s.kill(probe.pid);
        const offset = probe.pid - 500;
        nextPid(s.id, first.pid - offset);
        const second = await s.startProcess(['sh', '-c', 'cat; exec sleep 600'], { stdin: true });
        assert.equal(second.pid, first.pid, 'the second process got the first one pid');

        const list = (await s.processes()).filter((p) => p.pid === first.pid);
        assert.equal(list.length, 2, 'both processes are listed');
        const ids = list.map((p) => (p as { id?: string }).id);
        assert.ok(ids[0] && ids[1] && ids[0] !== ids[1], `distinct ids: ${ids}`);
        assert.deepEqual((await s.process(first.pid)).cmd, ['sh', '-c', 'cat; exec sleep 600'], 'a pid names the running process');
        assert.deepEqual((await s.process(ids[0]!)).cmd, ['sh', '-c', 'echo first; sleep 0.5'], 'an id names exactly one process');

        await s.sendStdin(first.pid, 'to the second\n');
        await s.closeStdin(first.pid);
        await until('the second process to read its stdin', async () => (await s.exec(['sh', '-c', 'ps -eo args | grep -c "^[s]leep 600"'])).stdout.trim() === '1');
        await s.kill(first.pid);
        const evs: ProcessEvent[] = [];
        for await (const ev of s.events(first.pid)) evs.push(ev);
        const out = Buffer.concat(evs.flatMap((e) => (e.type === 'stdout' ? [e.data] : []))).toString();
        assert.equal(out, 'to the second\n', 'stdin reached the second process');
        const exit = evs.find((e) => e.type === 'exit') as Extract<ProcessEvent, { type: 'exit' }>;
        assert.ok(exit.signal === 'SIGKILL' || exit.exit_code === 137, `the kill reached the second process: ${JSON.stringify(exit)}`);

        const again: ProcessEvent[] = [];
        for await (const ev of s.events(ids[0]!)) again.push(ev);
        const firstOut = Buffer.concat(again.flatMap((e) => (e.type === 'stdout' ? [e.data] : []))).toString();
        assert.equal(firstOut, 'first\n', 'the first process replays its own output');
        assert.equal((again.find((e) => e.type === 'exit') as Extract<ProcessEvent, { type: 'exit' }>).exit_code, 0, 'and keeps its own exit');
      } finally {
        await s.remove({ force: true }).catch(() => {});
      }
    });
  });
}
