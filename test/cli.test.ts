// The `cordon` CLI end to end: bin/cordon.js as a child process against one real daemon. Covers the
// contract in issue 2 (run/create/exec/rm -f, CORDON_URL, CORDON_API_KEY), every sandbox command
// with and without --json, cp both ways, and the sysexits-style exit codes with their messages.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI, cli, freePort, RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { until } from './helpers/assert.js';

let d: TestDaemon;
let tmp: string;
const suite = `cli${Date.now()}`;
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const json = <T = Record<string, unknown>>(r: { stdout: string; stderr: string }): T => {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    assert.fail(`not JSON:\n${r.stdout}\nstderr: ${r.stderr}`);
  }
};
const ok = (r: { code: number; stdout: string; stderr: string }, what: string) => assert.equal(r.code, 0, `${what}: exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
const ids = async () => (await cli(d, ['ls', '-q'])).stdout.split('\n').filter(Boolean).sort();

/** Like cli(), but stdout as raw bytes (for binary output). */
function cliRaw(args: string[]): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, CORDON_URL: d.url }, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    p.stdout.on('data', (x: Buffer) => out.push(x));
    p.stderr.on('data', (x) => (stderr += x));
    p.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr }));
  });
}

before(async () => {
  delete process.env.CORDON_API_KEY;
  tmp = mkdtempSync(join(tmpdir(), 'cordon-cli-'));
  d = await startDaemon('cli');
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

describe('cordon run', () => {
  for (const runtime of RUNTIMES) {
    test(`${runtime}: stdout and stderr apart, exit code passed through, limits, env/workdir/user, removed afterwards`, async () => {
      const before_ = await ids();
      const r = await cli(d, ['run', '--runtime', runtime, '--memory', '128m', '--cpus', '1', '--pids', '64', '--timeout', '60s', '-e', 'GREETING=hi there', '-w', '/tmp', '-u', 'user', '--', 'sh', '-c', 'echo "out $GREETING"; echo "err $(pwd)" >&2; id -un; exit 3']);
      assert.equal(r.code, 3, `exit code passthrough; stderr: ${r.stderr}`);
      assert.equal(r.stdout, 'out hi there\nuser\n');
      assert.equal(r.stderr, 'err /tmp\n');
      assert.deepEqual(await ids(), before_, 'the sandbox is removed after run');
    });
  }

  test('exit 0 with nothing on stderr', async () => {
    const r0 = await cli(d, ['run', '--', 'echo', 'hello']);
    ok(r0, 'run echo');
    assert.equal(r0.stdout, 'hello\n');
    assert.equal(r0.stderr, '');
  });

  for (const runtime of RUNTIMES) {
    test(`${runtime}: a missing command exits 127 from run and exec, and nothing is left behind`, async () => {
      const before_ = await ids();
      const r = await cli(d, ['run', '--runtime', runtime, '--', 'no-such-command-xyz']);
      assert.match(r.stderr, /no-such-command-xyz/);
      assert.deepEqual(await ids(), before_, 'no sandbox left behind, even after a failed command');
      assert.equal(r.code, 127, `run: stderr: ${r.stderr}`);
      const sbx = await d.client.create({ runtime, labels: { suite, kind: 'missing' } });
      try {
        const x = await cli(d, ['exec', sbx.id, '--', 'no-such-command-xyz']);
        assert.equal(x.code, 127, `exec: stderr: ${x.stderr}`);
        assert.match(x.stderr, /no-such-command-xyz: command not found/);
        const notExec = await cli(d, ['exec', sbx.id, '--', '/etc/passwd']);
        assert.equal(notExec.code, 126, `a file that is not executable: ${notExec.stderr}`);
        const badCwd = await cli(d, ['exec', '-w', '/no/such/dir', sbx.id, '--', 'true']);
        assert.equal(badCwd.code, 126);
        assert.match(badCwd.stderr, /working directory \/no\/such\/dir does not exist/);
      } finally {
        await sbx.remove({ force: true });
      }
    });
  }

  test('--keep leaves the sandbox listed and running', async () => {
    const r = await cli(d, ['run', '--keep', '-l', `suite=${suite}`, '-l', 'kind=kept', '--', 'sh', '-c', 'echo kept > /tmp/k; exit 5']);
    assert.equal(r.code, 5, r.stderr);
    const m = /sandbox ([a-z0-9]+) kept/.exec(r.stderr);
    assert.ok(m, `run --keep names the sandbox on stderr: ${r.stderr}`);
    const list = json<{ id: string; state: string }[]>(await cli(d, ['ls', '--label', 'kind=kept', '--json']));
    assert.deepEqual(list.map((s) => [s.id, s.state]), [[m[1], 'running']]);
    const x = await cli(d, ['exec', m[1], '--', 'cat', '/tmp/k']);
    ok(x, 'exec in the kept sandbox');
    assert.equal(x.stdout, 'kept\n', 'it is the same sandbox the command ran in');
    ok(await cli(d, ['rm', '-f', m[1]]), 'rm -f');
  });

  test('--env-file: comments skipped, K=V, and a bare K taken from the CLI environment; -e wins', async () => {
    const f = join(tmp, 'env');
    writeFileSync(f, '# a comment line\nFROM_FILE=file value\n\nCORDON_CLI_TEST_PASSED\nOVERRIDE=file\n');
    process.env.CORDON_CLI_TEST_PASSED = 'from the cli env';
    try {
      const r = await cli(d, ['run', '--env-file', f, '-e', 'OVERRIDE=flag', '--', 'sh', '-c', 'echo "$FROM_FILE|$CORDON_CLI_TEST_PASSED|$OVERRIDE"']);
      ok(r, 'run --env-file');
      assert.equal(r.stdout, 'file value|from the cli env|flag\n');
    } finally {
      delete process.env.CORDON_CLI_TEST_PASSED;
    }
  });

  test('--json prints one parseable result with exit_code, stdout and stderr', async () => {
    const r = await cli(d, ['run', '--json', '--', 'sh', '-c', 'printf o; printf e >&2; exit 4']);
    assert.equal(r.code, 4, r.stderr);
    const res = json<{ exit_code: number; stdout: string; stderr: string }>(r);
    assert.equal(res.exit_code, 4);
    assert.equal(res.stdout, 'o');
    assert.equal(res.stderr, 'e');
  });

  test('-i passes piped stdin; without -i the command sees no input', async () => {
    const input = 'line one\nline two\n';
    const r = await cli(d, ['run', '-i', '--', 'sh', '-c', 'cat; echo done'], input);
    ok(r, 'run -i');
    assert.equal(r.stdout, `${input}done\n`);
    const n = await cli(d, ['run', '--', 'sh', '-c', 'cat | wc -c'], input);
    ok(n, 'run without -i');
    assert.equal(n.stdout.trim(), '0');
  });
});

describe('create, exec, processes', () => {
  let id: string;

  test('create --json prints the sandbox with its id; plain create prints only the id', async () => {
    const r = await cli(d, ['create', '--json', '-l', `suite=${suite}`, '-l', 'kind=main', '-e', 'FOO=bar', '--memory', '128m']);
    ok(r, 'create --json');
    const info = json<{ id: string; state: string; labels: Record<string, string>; config: { memory: number } }>(r);
    assert.match(info.id, /^[a-z0-9]+$/);
    assert.equal(info.state, 'running');
    assert.deepEqual(info.labels, { suite, kind: 'main' });
    assert.equal(info.config.memory, 128 * 1024 * 1024);
    id = info.id;

    const p = await cli(d, ['create', '-l', `suite=${suite}`, '-l', 'kind=plain']);
    ok(p, 'create');
    assert.match(p.stdout, /^[a-z0-9]+\n$/, `only the id: ${JSON.stringify(p.stdout)}`);
    assert.equal((await d.client.get(p.stdout.trim())).info.state, 'running');
  });

  test('exec behaves like run: separate streams, exit code, env/workdir/user', async () => {
    const r = await cli(d, ['exec', id, '-e', 'X=1', '-w', '/home/user', '-u', 'user', '--', 'sh', '-c', 'echo "$FOO$X $(pwd) $(id -un)"; echo oops >&2; exit 7']);
    assert.equal(r.code, 7, r.stderr);
    assert.equal(r.stdout, 'bar1 /home/user user\n');
    assert.equal(r.stderr, 'oops\n');
    assert.equal((await cli(d, ['exec', id, '--', 'true'])).code, 0);
    const j = await cli(d, ['exec', id, '--json', '--', 'sh', '-c', 'echo j; exit 2']);
    assert.equal(j.code, 2);
    assert.equal(json<{ stdout: string }>(j).stdout, 'j\n');
  });

  test('exec -d --tag prints a pid; ps lists it; kill stops it; logs replays its output', async () => {
    const r = await cli(d, ['exec', '-d', '--tag', 't', id, '--', 'sh', '-c', 'echo bg-out; echo bg-err >&2; exec sleep 100000']);
    ok(r, 'exec -d');
    assert.match(r.stdout, /^\d+\n$/);
    const pid = Number(r.stdout);
    const ps = async () => json<{ pid: number; tag: string | null; running: boolean; exit_code: number | null }[]>(await cli(d, ['ps', id, '--json'])).find((p) => p.tag === 't');
    const p = await ps();
    assert.ok(p, 'ps --json lists the tagged process');
    assert.equal(p.pid, pid);
    assert.equal(p.running, true);
    const table = await cli(d, ['ps', id]);
    ok(table, 'ps');
    assert.match(table.stdout, new RegExp(`^${pid}\\s+t\\s+running`, 'm'));

    ok(await cli(d, ['kill', id, 't']), 'kill');
    await until('the killed process to exit', async () => (await ps())?.running === false);
    const logs = await cli(d, ['logs', id, 't']);
    ok(logs, 'logs');
    assert.equal(logs.stdout, 'bg-out\n');
    assert.equal(logs.stderr, 'bg-err\n');
  });
});

describe('inspecting and managing sandboxes', () => {
  let id: string;
  before(async () => {
    id = (await d.client.create({ labels: { suite, kind: 'managed' } })).id;
  });

  test('ls as a table, --json, -q, and --label filters', async () => {
    const t = await cli(d, ['ls']);
    ok(t, 'ls');
    const [head, ...rows] = t.stdout.trimEnd().split('\n');
    assert.match(head, /^ID\s+STATE\s+RUNTIME\s+SOURCE\s+CREATED\s+LABELS$/);
    const row = rows.find((l) => l.startsWith(`${id} `));
    assert.ok(row, `ls shows ${id}:\n${t.stdout}`);
    assert.match(row, /\srunning\s+runsc\s+base\s/);
    assert.match(row, new RegExp(`kind=managed`));

    const all = json<{ id: string }[]>(await cli(d, ['ls', '--json']));
    assert.ok(all.some((s) => s.id === id));
    const q = await cli(d, ['ls', '-q']);
    assert.deepEqual(q.stdout.split('\n').filter(Boolean).sort(), all.map((s) => s.id).sort());

    const only = json<{ id: string }[]>(await cli(d, ['ls', '--label', 'kind=managed', '--json']));
    assert.deepEqual(only.map((s) => s.id), [id]);
    assert.deepEqual(json(await cli(d, ['ls', '--label', `kind=none-${suite}`, '--json'])), []);
  });

  test('inspect prints the sandbox as JSON', async () => {
    const r = await cli(d, ['inspect', id]);
    ok(r, 'inspect');
    const info = json<{ id: string; state: string; labels: Record<string, string> }>(r);
    assert.equal(info.id, id);
    assert.equal(info.state, 'running');
    assert.equal(info.labels.kind, 'managed');
  });

  test('stop, start, pause, resume', async () => {
    const s = await cli(d, ['stop', id, '--json']);
    ok(s, 'stop');
    assert.equal(json<{ state: string }>(s).state, 'stopped');
    assert.equal((await d.client.get(id)).info.state, 'stopped');

    const st = await cli(d, ['start', id]);
    ok(st, 'start');
    assert.equal(st.stdout, `${id} running\n`);
    assert.equal((await cli(d, ['exec', id, '--', 'true'])).code, 0, 'usable after start');

    const p = await cli(d, ['pause', id]);
    ok(p, 'pause');
    assert.equal(p.stdout, `${id} paused\n`);
    assert.equal((await d.client.get(id)).info.state, 'paused');
    const again = await cli(d, ['pause', id]);
    assert.equal(again.code, 65, `pausing a paused sandbox is the wrong state: ${again.stderr}`);
    const r = await cli(d, ['resume', id, '--json']);
    ok(r, 'resume');
    assert.equal(json<{ state: string }>(r).state, 'running');
  });

  test('timeout, update --memory, stats, events', async () => {
    const t = await cli(d, ['timeout', id, '5m', '--json']);
    ok(t, 'timeout');
    const exp = json<{ expires_at: string | null }>(t).expires_at;
    assert.ok(exp, 'expires_at is set');
    const left = Date.parse(exp) - Date.now();
    assert.ok(left > 4 * 60_000 && left <= 5 * 60_000, `expires about 5m from now: ${exp}`);

    const u = await cli(d, ['update', id, '--memory', '256m', '--json']);
    ok(u, 'update');
    assert.equal(json<{ config: { memory: number } }>(u).config.memory, 256 * 1024 * 1024);

    const s = await cli(d, ['stats', id, '--json']);
    ok(s, 'stats');
    const stats = json<Record<string, unknown>>(s);
    for (const k of ['cpu_percent', 'memory_usage', 'memory_limit', 'memory_percent', 'pid_count', 'network_rx', 'network_tx', 'disk_read', 'disk_write']) assert.equal(typeof stats[k], 'number', `${k} is a number: ${s.stdout}`);
    assert.equal(stats.memory_limit, 256 * 1024 * 1024, 'stats see the updated limit');
    assert.ok((stats.memory_usage as number) > 0);
    const plain = await cli(d, ['stats', id]);
    ok(plain, 'stats table');
    assert.match(plain.stdout, /MEM USAGE \/ LIMIT/);

    const e = await cli(d, ['events', id, '--json']);
    ok(e, 'events');
    const types = json<{ type: string }[]>(e).map((x) => x.type);
    for (const want of ['created', 'stopped', 'started', 'paused', 'resumed', 'updated']) assert.ok(types.includes(want), `events include ${want}: ${types.join(',')}`);
  });

  test('cp both ways with a binary file, to stdout, and a directory is refused', async () => {
    const data = randomBytes(300_000);
    const src = join(tmp, 'blob.bin');
    writeFileSync(src, data);
    ok(await cli(d, ['cp', src, `${id}:/tmp/blob.bin`]), 'cp in');
    const inside = await cli(d, ['exec', id, '--', 'sha256sum', '/tmp/blob.bin']);
    assert.equal(inside.stdout.split(' ')[0], sha(data), 'same bytes inside the sandbox');

    const back = join(tmp, 'back.bin');
    ok(await cli(d, ['cp', `${id}:/tmp/blob.bin`, back]), 'cp out');
    assert.equal(sha(readFileSync(back)), sha(data));
    const out = await cliRaw(['cp', `${id}:/tmp/blob.bin`, '-']);
    assert.equal(out.code, 0, out.stderr);
    assert.equal(sha(out.stdout), sha(data), 'cp ID:/path - writes the exact bytes to stdout');

    const dir = join(tmp, 'adir');
    mkdirSync(dir, { recursive: true });
    const r = await cli(d, ['cp', dir, `${id}:/tmp/adir`]);
    assert.equal(r.code, 64, r.stderr);
    assert.match(r.stderr, /not a regular file/);
    const r2 = await cli(d, ['cp', `${id}:/tmp`, join(tmp, 'outdir')]);
    assert.equal(r2.code, 64, `copying a sandbox directory out: ${r2.stderr}`);
    assert.match(r2.stderr, /\/tmp/);
  });

  test('rm -f removes a running sandbox', async () => {
    const r = await cli(d, ['rm', '-f', id]);
    ok(r, 'rm -f');
    assert.equal(r.stdout, `${id}\n`);
    assert.ok(!(await ids()).includes(id));
    assert.equal((await cli(d, ['inspect', id])).code, 66);
  });
});

describe('errors and exit codes', () => {
  test('an unknown sandbox id exits 66 and names it', async () => {
    for (const args of [['inspect', 'nosuchbox123'], ['exec', 'nosuchbox123', '--', 'true'], ['rm', '-f', 'nosuchbox123'], ['stop', 'nosuchbox123']]) {
      const r = await cli(d, args);
      assert.equal(r.code, 66, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /nosuchbox123/, args.join(' '));
    }
  });

  test('a bad flag value exits 64 naming the field', async () => {
    const before_ = await ids();
    const r = await cli(d, ['create', '--memory', 'lots']);
    assert.equal(r.code, 64, r.stderr);
    assert.match(r.stderr, /memory/);
    const c = await cli(d, ['run', '--cpus', 'many', '--', 'true']);
    assert.equal(c.code, 64, c.stderr);
    assert.match(c.stderr, /--cpus/);
    const n = await cli(d, ['run']);
    assert.equal(n.code, 64, 'run with no command');
    assert.deepEqual(await ids(), before_, 'nothing was created');
  });

  test('--json errors are JSON on stdout', async () => {
    const r = await cli(d, ['inspect', 'nosuchbox123', '--json']);
    assert.equal(r.code, 66);
    const e = json<{ error: { code: string; message: string } }>(r);
    assert.equal(e.error.code, 'not_found');
    assert.match(e.error.message, /nosuchbox123/);
    const b = await cli(d, ['create', '--memory', 'lots', '--json']);
    assert.equal(b.code, 64);
    assert.equal(json<{ error: { code: string } }>(b).error.code, 'invalid_argument');
  });

  test('no daemon listening exits 69 and says to start `cordon serve`', async () => {
    const r = await cli({ url: `http://127.0.0.1:${await freePort()}` }, ['ls']);
    assert.equal(r.code, 69, r.stderr);
    assert.match(r.stderr, /cordon serve/);
  });

  describe('a daemon with an API key', () => {
    let k: TestDaemon;
    const apiKey = `key-${randomBytes(12).toString('hex')}`;
    before(async () => {
      k = await startDaemon('cli-key', { apiKey });
    });
    after(async () => {
      for (const s of await k.client.list().catch(() => [])) await k.client.remove(s.id, { force: true }).catch(() => {});
      await k.cleanup();
    });

    test('77 without CORDON_API_KEY or with a wrong one, success with it', async () => {
      const none = await cli({ url: k.url }, ['ls']);
      assert.equal(none.code, 77, none.stderr);
      const wrong = await cli({ url: k.url, apiKey: 'wrong' }, ['ls', '--json']);
      assert.equal(wrong.code, 77);
      assert.equal(json<{ error: { code: string } }>(wrong).error.code, 'unauthenticated');
      ok(await cli(k, ['ls']), 'ls with the key');
      const r = await cli(k, ['run', '--', 'echo', 'authed']);
      ok(r, 'run with the key');
      assert.equal(r.stdout, 'authed\n');
    });
  });
});
