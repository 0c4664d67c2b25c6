// Limits that hold, on every runtime: memory bomb, fork bomb, disk fill, wall-clock timeout and its
// extension, a live memory-limit change, and stats from the kernel's accounting.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { rejectsWith, sleep, until } from './helpers/assert.js';

let d: TestDaemon;

before(async () => {
  d = await startDaemon('limits');
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d.cleanup();
});

const MiB = 1024 * 1024;

for (const runtime of RUNTIMES) {
  describe(`limits on ${runtime}`, () => {
    test('memory bomb past --memory is killed and reported', async () => {
      const s = await d.client.create({ runtime, memory: '128m' });
      try {
        const r = await s.exec(['python3', '-c', 'b=[]\nwhile True: b.append(bytearray(16*1024*1024))']).catch((e: Error) => e);
        const info = await s.refresh();
        const events = await s.events_();
        const oomEvent = events.some((e) => e.type === 'oom' || (e.type === 'died' && /memory/i.test(e.message)));
        if (info.state === 'error') {
          assert.match(info.state_reason ?? '', /memory/i, 'the sandbox died for lack of memory');
        } else {
          assert.ok(!(r instanceof Error), `exec answered: ${r}`);
          assert.equal(r.exit_code, 137, `the process was OOM-killed (${JSON.stringify(r)})`);
          assert.equal(r.oom_killed, true);
          assert.equal((await s.exec(['echo', 'still here'])).stdout, 'still here\n', 'the sandbox survives its process');
        }
        assert.ok(oomEvent, `an oom event was recorded: ${JSON.stringify(events)}`);
      } finally {
        await s.remove().catch(() => {});
      }
    });

    test('fork bomb as user with --pids 64 is contained and the daemon stays responsive', async () => {
      const s = await d.client.create({ runtime, pids: 64 });
      try {
        const bomb = s.exec(['bash', '-c', 'bomb() { bomb | bomb & }; bomb; sleep 5; echo survived'], { user: 'user', timeout: '20s' });
        await sleep(1500);
        const h = await fetch(`${d.url}/v1/health`);
        assert.equal(h.status, 200, 'the daemon answers during the bomb');
        const count = await s.exec(['sh', '-c', 'ps -e --no-headers | wc -l']);
        assert.ok(Number(count.stdout) <= 64 + 8, `processes in the sandbox stay near the limit (${count.stdout.trim()})`);
        await bomb;
        await s.exec(['pkill', '-9', '-u', 'user']);
        const after = await s.exec(['echo', 'ok']);
        assert.equal(after.stdout, 'ok\n', 'root can still run commands');
        assert.equal((await fetch(`${d.url}/v1/health`)).status, 200);
      } finally {
        await s.remove().catch(() => {});
      }
    });

    test('disk fill past --disk 64m fails with ENOSPC', async () => {
      const s = await d.client.create({ runtime, disk: '64m' });
      try {
        const r = await s.exec(['sh', '-c', 'dd if=/dev/zero of=/root/fill bs=1M count=200 2>&1; echo "rc=$?"']);
        assert.match(r.stdout, /No space left on device/);
        assert.doesNotMatch(r.stdout, /rc=0/);
        const size = Number((await s.exec(['stat', '-c', '%s', '/root/fill'])).stdout);
        assert.ok(size < 64 * MiB, `the file stopped below the limit (${size})`);
        await rejectsWith(s.files.write('/root/more', Buffer.alloc(8 * MiB)), 'no_space');
        await s.exec(['rm', '-f', '/root/fill']);
        assert.equal((await s.files.write('/root/small', 'fits again')).size, 10, 'space is usable after removing the file');
      } finally {
        await s.remove().catch(() => {});
      }
    });

    test('wall-clock timeout removes the sandbox; extending it keeps it alive past the first expiry', async () => {
      const short = await d.client.create({ runtime, timeout: '3s' });
      const extended = await d.client.create({ runtime, timeout: '3s' });
      try {
        assert.ok(short.info.expires_at, 'expires_at is set');
        const firstExpiry = Date.parse(extended.info.expires_at!);
        const ext = await extended.setTimeout('60s');
        assert.ok(Date.parse(ext.expires_at!) > firstExpiry + 30_000, 'the new expiry is later');
        await until('the short sandbox is removed', async () => !(await d.client.list()).some((x) => x.id === short.id), 30_000);
        await rejectsWith(d.client.get(short.id), 'not_found');
        while (Date.now() < firstExpiry + 1500) await sleep(200);
        assert.equal((await extended.exec(['echo', 'alive'])).stdout, 'alive\n', 'the extended sandbox outlives its first expiry');
        await rejectsWith(extended.setTimeout('forever'), 'invalid_argument', /timeout/);
      } finally {
        await short.remove().catch(() => {});
        await extended.remove().catch(() => {});
      }
    });

    test('--cpus 0.5 caps two busy loops at half a core', async () => {
      const s = await d.client.create({ runtime, cpus: 0.5 });
      try {
        await s.startProcess(['sh', '-c', 'while :; do :; done'], { tag: 'spin1' });
        await s.startProcess(['sh', '-c', 'while :; do :; done'], { tag: 'spin2' });
        await sleep(500);
        const samples: number[] = [];
        for (let i = 0; i < 4; i++) samples.push((await s.stats()).cpu_percent);
        const avg = samples.reduce((a, b) => a + b, 0) / samples.length;
        // Uncapped, two loops on this 2-core host would show ~200%; the quota is 50 ms per 100 ms.
        assert.ok(avg > 20, `the loops do run (${samples.join(', ')})`);
        assert.ok(avg < 75, `CPU stays near the 50% quota (${samples.join(', ')})`);
      } finally {
        await s.remove().catch(() => {});
      }
    });

    test('live memory limit change and stats', async () => {
      const s = await d.client.create({ runtime, memory: '256m', cpus: 1 });
      try {
        await s.exec(['sh', '-c', 'dd if=/dev/urandom of=/root/io bs=1M count=8 2>/dev/null']);
        await s.startProcess(['sh', '-c', 'while :; do :; done'], { tag: 'spin' });
        await sleep(500);
        const st = await s.stats();
        assert.equal(st.memory_limit, 256 * MiB);
        assert.ok(st.memory_usage > 0, 'memory usage is counted');
        assert.ok(st.memory_percent > 0 && st.memory_percent < 100);
        assert.ok(st.pid_count > 0, 'pids are counted');
        assert.ok(st.cpu_percent > 10, `a busy loop shows cpu (${st.cpu_percent})`);
        assert.equal(st.network_rx, 0, 'no network');
        assert.ok(!Number.isNaN(Date.parse(st.timestamp)));
        await s.kill('spin');

        const up = await s.setMemoryLimit('384m');
        assert.equal(up.config.memory, 384 * MiB);
        assert.equal((await s.stats()).memory_limit, 384 * MiB);
        const down = await s.setMemoryLimit('96m');
        assert.equal(down.config.memory, 96 * MiB);
        assert.equal((await s.stats()).memory_limit, 96 * MiB);
        const big = await s.exec(['python3', '-c', 'b=bytearray(200*1024*1024); print(len(b))']).catch((e: Error) => e);
        // On runsc the OOM can take the whole sandbox down; the exec sees that before the state says error.
        if (big instanceof Error) await until('the sandbox is marked error', async () => (await s.refresh()).state === 'error', 60_000);
        const info = await s.refresh();
        assert.ok(info.state === 'error' || (!(big instanceof Error) && big.exit_code === 137), `the lowered limit is enforced (state ${info.state}, exec ${big instanceof Error ? big.message : `exit ${big.exit_code}: ${big.stdout}${big.stderr}`})`);
      } finally {
        await s.remove().catch(() => {});
      }
    });
  });
}
