// The official `e2b` SDK against a cordon daemon: lifecycle, commands and PTY.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CommandExitError, Sandbox, TimeoutError, type CommandHandle } from 'e2b';
import { AGENT_MISSING, startDaemon, type TestDaemon } from './helpers/daemon.js';

let d: TestDaemon;
/** Every SDK call goes to the test daemon on loopback; the key is a dummy. */
let o: { apiKey: string; apiUrl: string; sandboxUrl: string; domain: string };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, fn: () => Promise<boolean> | boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await sleep(100);
  }
  assert.fail(`timed out waiting for ${what}`);
}

before(async () => {
  d = await startDaemon('e2b-sandbox');
  o = { apiKey: 'e2b_dummy', apiUrl: d.url, sandboxUrl: d.url, domain: 'cordon.invalid' };
});
after(async () => {
  for (const s of await Sandbox.list({ ...o, query: { state: ['running', 'paused'] } }).nextItems().catch(() => [])) await Sandbox.kill(s.sandboxId, o).catch(() => {});
  await d.cleanup();
});

describe('e2b control plane', () => {
  test('create with template, timeout, metadata and envs; getInfo; list with filters and paging; connect; kill', async () => {
    const tag = `t${Date.now()}`;
    const a = await Sandbox.create('base', { ...o, timeoutMs: 120_000, metadata: { suite: tag, role: 'a' }, envs: { GREETING: 'hello' } });
    const b = await Sandbox.create({ ...o, timeoutMs: 120_000, metadata: { suite: tag, role: 'b' } });
    const c = await Sandbox.create({ ...o, timeoutMs: 120_000, metadata: { suite: tag, role: 'c' } });
    try {
      assert.equal((await a.commands.run('echo $GREETING')).stdout, 'hello\n');
      const info = await a.getInfo();
      assert.equal(info.sandboxId, a.sandboxId);
      assert.equal(info.templateId, 'base');
      assert.deepEqual(info.metadata, { suite: tag, role: 'a' });
      assert.equal(info.state, 'running');
      const left = info.endAt.getTime() - Date.now();
      assert.ok(left > 60_000 && left <= 120_000, `endAt follows the timeout (${left} ms left)`);

      const onlyB = await Sandbox.list({ ...o, query: { metadata: { suite: tag, role: 'b' } } }).nextItems();
      assert.deepEqual(onlyB.map((s) => s.sandboxId), [b.sandboxId]);
      assert.equal((await Sandbox.list({ ...o, query: { metadata: { suite: tag }, state: ['paused'] } }).nextItems()).length, 0);

      const pager = Sandbox.list({ ...o, limit: 2, query: { metadata: { suite: tag } } });
      const page1 = await pager.nextItems();
      assert.equal(page1.length, 2);
      assert.ok(pager.hasNext, 'a second page is announced with x-next-token');
      const page2 = await pager.nextItems();
      assert.equal(page2.length, 1);
      assert.equal(pager.hasNext, false);
      assert.deepEqual(new Set([...page1, ...page2].map((s) => s.sandboxId)), new Set([a.sandboxId, b.sandboxId, c.sandboxId]));

      const again = await Sandbox.connect(a.sandboxId, o);
      assert.equal((await again.commands.run('echo connected')).stdout, 'connected\n');
    } finally {
      assert.equal(await b.kill(), true);
      await c.kill();
      await a.kill();
    }
    assert.equal(await a.isRunning(), false);
    assert.equal(await Sandbox.kill(a.sandboxId, o), false, 'killing twice reports not found');
    await assert.rejects(Sandbox.getInfo(a.sandboxId, o), /not found/i);
  });

  test('setTimeout: the sandbox really dies at expiry', async () => {
    const sb = await Sandbox.create({ ...o, timeoutMs: 300_000 });
    assert.equal(await sb.isRunning(), true);
    await sb.setTimeout(2_000);
    await until('the sandbox to expire', async () => !(await sb.isRunning()));
    await assert.rejects(sb.commands.run('true'));
    await until('the expired sandbox to leave the list', async () => !(await Sandbox.list({ ...o }).nextItems()).some((s) => s.sandboxId === sb.sandboxId));
  });

  test('bad input gets a 4xx the SDK turns into an error', async () => {
    await assert.rejects(Sandbox.create('No Such Template!', o), /400|template/i);
    await assert.rejects(Sandbox.connect('doesnotexist', o), /not found/i);
  });
});

describe('e2b commands and pty', () => {
  let sb: Sandbox;
  before(async () => {
    sb = await Sandbox.create({ ...o, timeoutMs: 600_000, envs: { SANDBOX_LEVEL: 'yes' } });
  });
  after(async () => sb?.kill());

  test('run: stdout, stderr, exit code, default user and cwd', async () => {
    const r = await sb.commands.run('echo out; echo err >&2; whoami; pwd; echo $SANDBOX_LEVEL');
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, 'out\nuser\n/home/user\nyes\n');
    assert.equal(r.stderr, 'err\n');
  });

  test('non-zero exit raises CommandExitError with the result', async () => {
    const err = await sb.commands.run('echo partial; exit 3').then(
      () => assert.fail('should throw'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof CommandExitError);
    assert.equal(err.exitCode, 3);
    assert.equal(err.stdout, 'partial\n');
  });

  test('envs, cwd and user options', async () => {
    const r = await sb.commands.run('echo $A_VAR; pwd; id -un', { envs: { A_VAR: 'per-command' }, cwd: '/tmp', user: 'root' });
    assert.equal(r.stdout, 'per-command\n/tmp\nroot\n');
  });

  test('login shell: variables from /etc/profile.d and ~/.profile are seen, and a change to them by the next call', { timeout: 120_000 }, async () => {
    // commands.run is `bash -l -c`. The agent learns the login environment once and then runs
    // `bash -c` with it (shopt login_shell tells the two apart); profile changes must show at once.
    const show = 'echo "$CORDON_SYS_VAR/$CORDON_HOME_VAR/$CORDON_NEW_VAR"; shopt -q login_shell && echo login || echo cached';
    await sb.files.write('/etc/profile.d/cordon-test.sh', 'export CORDON_SYS_VAR=sys1\n', { user: 'root' });
    await sb.commands.run('touch ~/.profile && cp ~/.profile /tmp/profile.orig && echo "export CORDON_HOME_VAR=home1" >> ~/.profile');
    const run = async () => (await sb.commands.run(show)).stdout.split('\n');
    try {
      assert.deepEqual((await run()).slice(0, 1), ['sys1/home1/']);
      if (!AGENT_MISSING) await until('the learned login environment to be used', async () => (await run())[1] === 'cached');
      assert.deepEqual(await run(), ['sys1/home1/', AGENT_MISSING ? 'login' : 'cached', '']);
      // Same sizes: only the contents (and times) change.
      await sb.files.write('/etc/profile.d/cordon-test.sh', 'export CORDON_SYS_VAR=sys2\n', { user: 'root' });
      assert.equal((await run())[0], 'sys2/home1/');
      await sb.commands.run("sed -i 's/CORDON_HOME_VAR=home1/CORDON_HOME_VAR=home2/' ~/.profile");
      assert.equal((await run())[0], 'sys2/home2/');
      await sb.files.write('/etc/profile.d/cordon-new.sh', 'export CORDON_NEW_VAR=new\n', { user: 'root' });
      assert.equal((await run())[0], 'sys2/home2/new');
      await sb.files.remove('/etc/profile.d/cordon-new.sh', { user: 'root' });
      assert.equal((await run())[0], 'sys2/home2/');
      // Once settled, the learned environment is used again, and it holds the new values.
      if (!AGENT_MISSING) await until('the new login environment to be learned', async () => (await run())[1] === 'cached');
      assert.deepEqual(await run(), ['sys2/home2/', AGENT_MISSING ? 'login' : 'cached', '']);
    } finally {
      await sb.files.remove('/etc/profile.d/cordon-test.sh', { user: 'root' }).catch(() => {});
      await sb.commands.run('cp /tmp/profile.orig ~/.profile').catch(() => {});
    }
  });

  test('plain commands run without the shell, as bash would run them; anything else goes through bash', { timeout: 120_000 }, async () => {
    // bash -c execs a lone simple command in its own place, so skipping bash shows only in the bytes
    // the process has read: bash's start adds its own reads to the count in /proc/self/io.
    const run = async (cmd: string, opts: { cwd?: string; envs?: Record<string, string> } = {}) =>
      sb.commands.run(cmd, opts).catch((e: unknown) => (e instanceof CommandExitError ? e : Promise.reject(e)));
    const rchar = async (cmd: string, opts?: { cwd?: string; envs?: Record<string, string> }) => Number(/^r?char: (\d+)/.exec((await run(cmd, opts)).stdout)?.[1]);
    const direct = async (opts?: { cwd?: string; envs?: Record<string, string> }) => (await rchar('cat /proc/self/io', opts)) < (await rchar('"cat" /proc/self/io', opts));
    if (!AGENT_MISSING) {
      await until('plain commands to skip bash', direct);
      assert.ok(await direct(), 'a plain command reads less than the same command through bash');
    }
    // The environment is bash's (SHLVL, PWD, `_`, ...): `"env"` is the same one command through bash.
    const lines = async (cmd: string, opts?: { cwd?: string; envs?: Record<string, string> }) => (await run(cmd, opts)).stdout.split('\n').sort();
    assert.deepEqual(await lines('env'), await lines('"env"'));
    const opts = { cwd: '/tmp', envs: { PER_COMMAND: 'x y', OLDPWD: '/etc' } };
    if (!AGENT_MISSING) await until('plain commands with these options to skip bash', () => direct(opts));
    assert.deepEqual(await lines('env a=b', opts), await lines('"env" a=b', opts));
    assert.ok((await lines('env', opts)).includes('PER_COMMAND=x y'));
    // Not plain words, builtins and keywords: bash runs them as before.
    assert.equal((await run('echo "a b" $HOME')).stdout, 'a b /home/user\n');
    assert.equal((await run('ls -d /etc/hostnam*')).stdout, '/etc/hostname\n');
    assert.equal((await run('a=b env')).stdout.split('\n').includes('a=b'), true);
    assert.equal((await run('true; false')).exitCode, 1);
    assert.equal((await run('echo --version')).stdout, '--version\n', 'the builtin, not /bin/echo');
    assert.deepEqual([(await run('true')).exitCode, (await run('false')).exitCode, (await run('true x')).exitCode], [0, 1, 0]);
    // Exit codes, output and bash's own failures.
    const ls = await run('ls /nonexistent');
    assert.equal(ls.exitCode, 2);
    assert.match(ls.stderr, /^ls: cannot access '\/nonexistent': No such file or directory\n$/);
    const missing = await run('cordon-no-such-command x');
    assert.deepEqual([missing.exitCode, missing.stdout, missing.stderr], [127, '', '/bin/bash: line 1: cordon-no-such-command: command not found\n']);
    // On PATH but not executable: bash's 126; a script without #! runs as a bash script.
    await sb.files.write('/usr/local/bin/cordon-noexec', 'echo never\n', { user: 'root' });
    await sb.files.write('/usr/local/bin/cordon-noshebang', 'echo "from a script: $0"\n', { user: 'root' });
    try {
      await sb.commands.run('chmod 644 /usr/local/bin/cordon-noexec && chmod 755 /usr/local/bin/cordon-noshebang', { user: 'root' });
      const noexec = await run('cordon-noexec');
      assert.equal(noexec.exitCode, 126);
      assert.match(noexec.stderr, /cordon-noexec: Permission denied/);
      assert.equal((await run('cordon-noshebang')).stdout, 'from a script: /usr/local/bin/cordon-noshebang\n');
    } finally {
      await sb.commands.run('rm -f /usr/local/bin/cordon-noexec /usr/local/bin/cordon-noshebang', { user: 'root' }).catch(() => {});
    }
    // The pid reported is the program's, and kill ends it.
    const sleeper = await sb.commands.run('sleep 600', { background: true });
    assert.equal((await run(`cat /proc/${sleeper.pid}/cmdline`)).stdout, 'sleep\x00600\x00');
    assert.equal(await sb.commands.kill(sleeper.pid), true);
    await assert.rejects(sleeper.wait(), (e: unknown) => e instanceof CommandExitError);
    // A changed profile: the real login shell runs (it reads the profile), and its variables show.
    if (!AGENT_MISSING) {
      const settled = await rchar('cat /proc/self/io');
      await sb.files.write('/etc/profile.d/cordon-direct.sh', 'export CORDON_DIRECT=yes\n', { user: 'root' });
      try {
        assert.ok((await rchar('cat /proc/self/io')) > settled, 'the login shell ran');
        assert.ok((await lines('env')).includes('CORDON_DIRECT=yes'));
      } finally {
        await sb.files.remove('/etc/profile.d/cordon-direct.sh', { user: 'root' });
      }
    }
  });

  test('streaming callbacks see output as it comes', async () => {
    const out: string[] = [];
    const errs: string[] = [];
    await sb.commands.run('for i in 1 2 3; do echo line$i; sleep 0.1; done; echo bad >&2', { onStdout: (s) => void out.push(s), onStderr: (s) => void errs.push(s) });
    assert.equal(out.join(''), 'line1\nline2\nline3\n');
    assert.ok(out.length >= 2, 'output arrived in more than one chunk');
    assert.equal(errs.join(''), 'bad\n');
  });

  test('background processes: list, connect by pid, sendStdin, closeStdin, kill', async () => {
    const cat = await sb.commands.run('cat', { background: true, stdin: true });
    const seen: string[] = [];
    const sleeper = await sb.commands.run('sleep 600', { background: true });
    const pids = (await sb.commands.list()).map((p) => p.pid);
    assert.ok(pids.includes(cat.pid) && pids.includes(sleeper.pid), `both listed: ${pids}`);

    const again: CommandHandle = await sb.commands.connect(cat.pid, { onStdout: (s) => void seen.push(s) });
    await sb.commands.sendStdin(cat.pid, 'via stdin\n');
    await until('echoed stdin', () => seen.join('').includes('via stdin\n'));
    await cat.closeStdin();
    const res = await again.wait();
    assert.equal(res.exitCode, 0);

    assert.equal(await sb.commands.kill(sleeper.pid), true);
    await assert.rejects(sleeper.wait(), (e: unknown) => e instanceof CommandExitError);
    assert.equal((await sb.commands.list()).some((p) => p.pid === sleeper.pid), false);
    assert.equal(await sb.commands.kill(999_999), false, 'killing an unknown pid reports false');
  });

  test('a too-short timeout ends the command with TimeoutError', async () => {
    await assert.rejects(sb.commands.run('sleep 30', { timeoutMs: 1_000 }), (e: unknown) => e instanceof TimeoutError);
    await until('the timed-out command to be killed', async () => !(await sb.commands.list()).some((p) => p.args?.includes('sleep 30')));
  });

  test('pty: create, send input, resize, kill', async () => {
    let out = '';
    const dec = new TextDecoder();
    const pty = await sb.pty.create({ cols: 80, rows: 24, onData: (b) => void (out += dec.decode(b)) });
    await sb.pty.sendInput(pty.pid, new TextEncoder().encode('stty size; echo pty-$((40+2))\n'));
    await until('pty output', () => out.includes('pty-42') && out.includes('24 80'));
    await sb.pty.resize(pty.pid, { cols: 100, rows: 30 });
    await sb.pty.sendInput(pty.pid, new TextEncoder().encode('stty size\n'));
    await until('resized', () => out.includes('30 100'));
    assert.equal(await sb.pty.kill(pty.pid), true);
    await assert.rejects(pty.wait());
  });

  test('metrics', async () => {
    const m = await sb.getMetrics();
    assert.ok(m.length >= 1);
    assert.ok(m[0].memTotal > 0 && m[0].memUsed > 0 && m[0].cpuCount >= 1);
  });

  test('a port other than envd answers 502: no network yet', async () => {
    const res = await fetch(`${d.url}/`, { headers: { 'E2b-Sandbox-Id': sb.sandboxId, 'E2b-Sandbox-Port': '8080' } });
    assert.equal(res.status, 502);
    assert.match(((await res.json()) as { message: string }).message, /port 8080.*not (reachable|open)/);
  });

  test('envd refuses a wrong access token', async () => {
    const res = await fetch(`${d.url}/process.Process/List`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'E2b-Sandbox-Id': sb.sandboxId, 'E2b-Sandbox-Port': '49983', 'X-Access-Token': 'wrong' },
      body: '{}',
    });
    assert.equal(res.status, 401);
  });
});
