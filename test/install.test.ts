// Installing cordon like a tool: `npm pack` (its prepack builds dist and the agent) and a global
// install into a scratch prefix; then, from an unrelated directory, `cordon --version`, `cordon run`
// against a test daemon, the SDK imported as `cordon/sdk`, and the installed daemon itself (crun:
// its seccomp profile ships too) with --api-key-file. `cordon service install`: the unit and init
// scripts it writes, `systemd-analyze verify` where it exists, and hostile values refused.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI, freePort, REPO, startDaemon, TEMPLATES_DIR, type TestDaemon } from './helpers/daemon.js';

const scratch = mkdtempSync(join(tmpdir(), 'cordon-install-test-'));
const elsewhere = join(scratch, 'elsewhere');
mkdirSync(elsewhere);
/** Dependencies with a native addon (package-lock.json: hasInstallScript). */
const NATIVE_MODULES = ['better-sqlite3', 'node-pty'];
const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;

after(() => rmSync(scratch, { recursive: true, force: true }));

function runIn(cwd: string, cmd: string, args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGKILL' });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

const service = (args: string[]) => runIn(elsewhere, process.execPath, [CLI, 'service', 'install', ...args]);

describe('cordon service install', () => {
  test('systemd unit: absolute node and CLI, the flags given, KillMode=process; systemd-analyze accepts it', async () => {
    const keyFile = join(scratch, 'api-key');
    const r = await service(['--init', 'systemd', '--print', '--data-dir', '/srv/cordon', '--listen', '0.0.0.0:7443', '--api-key-file', keyFile, '--serve-arg=--runtime', '--serve-arg=crun']);
    assert.equal(r.code, 0, r.stderr);
    const unit = r.stdout;
    assert.match(unit, /^\[Unit\]$/m);
    assert.match(unit, /^\[Install\]\nWantedBy=multi-user\.target$/m);
    const execStart = /^ExecStart=(.+)$/m.exec(unit)![1].split(' ');
    assert.ok(execStart[0].startsWith('/') && existsSync(execStart[0]), 'node is an absolute path');
    assert.ok(execStart[1].endsWith('/bin/cordon.js') && existsSync(execStart[1]));
    assert.deepEqual(execStart.slice(2), ['serve', '--listen', '0.0.0.0:7443', '--data-dir', '/srv/cordon', '--api-key-file', keyFile, '--runtime', 'crun']);
    assert.match(unit, /^KillMode=process$/m, 'sandboxes outlive a daemon restart');
    assert.match(unit, /^Restart=on-failure$/m);
    const analyze = await runIn(scratch, 'sh', ['-c', 'command -v systemd-analyze']);
    if (analyze.code === 0) {
      const file = join(scratch, 'cordon.service');
      writeFileSync(file, unit);
      const v = await runIn(scratch, 'systemd-analyze', ['verify', file]);
      assert.equal(v.code, 0, `systemd-analyze verify: ${v.stdout}${v.stderr}`);
    }
  });

  test('OpenRC and plain init scripts parse as shell and carry the same command', async () => {
    for (const init of ['openrc', 'sysv']) {
      const r = await service(['--init', init, '--print', '--data-dir', '/srv/cordon']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /serve --listen 127\.0\.0\.1:7070 --data-dir \/srv\/cordon/);
      const file = join(scratch, `cordon.${init}`);
      writeFileSync(file, r.stdout);
      if (init === 'sysv') {
        const n = await runIn(scratch, 'sh', ['-n', file]);
        assert.equal(n.code, 0, n.stderr);
      } else assert.match(r.stdout, /^#!\/sbin\/openrc-run$/m);
    }
  });

  test('writes the file with --output (never enables or starts anything), refuses to overwrite', async () => {
    const out = join(scratch, 'written.service');
    const r = await service(['--init', 'systemd', '--output', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout) as { written: boolean; path: string; next: string[]; init: string };
    assert.equal(res.written, true);
    assert.equal(res.path, out);
    assert.match(readFileSync(out, 'utf8'), /^ExecStart=/m);
    const again = await service(['--init', 'systemd', '--output', out]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /exists; pass --force/);
    assert.equal((await service(['--init', 'systemd', '--output', out, '--force'])).code, 0);
  });

  test('hostile values cannot inject lines or words into the unit', async () => {
    const cases: [string[], RegExp][] = [
      [['--data-dir', '/srv/x\nExecStartPre=/bin/evil'], /--data-dir may hold only/],
      [['--data-dir', 'relative/dir'], /absolute path/],
      [['--data-dir', '/srv/../etc'], /without \.\./],
      [['--api-key-file', '/etc/key file'], /--api-key-file may hold only/],
      [['--serve-arg', '--runtime crun'], /--serve-arg may hold only/],
      [['--serve-arg', '$(reboot)'], /--serve-arg may hold only/],
      [['--listen', '0.0.0.0:7070'], /needs an API key: pass --api-key-file/],
      [['--listen', 'host:7070;reboot'], /--listen must look like/],
      [['--init', 'upstart'], /--init must be/],
    ];
    for (const [args, msg] of cases) {
      const r = await service(['--print', '--init', 'systemd', ...args]);
      assert.notEqual(r.code, 0, `${args.join(' ')} is refused`);
      assert.match(r.stderr, msg);
      assert.equal(r.stdout, '', 'nothing is printed');
    }
  });
});

describe('npm pack + global install', () => {
  let d: TestDaemon;
  let prefix: string;
  let tarball: string;
  before(async () => {
    d = await startDaemon('install');
  });
  after(async () => {
    for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
    await d.cleanup();
  });

  test('npm pack builds and ships dist, the agent and the seccomp profile, not the tests', { timeout: 10 * 60_000 }, async () => {
    const packDir = join(scratch, 'pack');
    mkdirSync(packDir);
    // The test command has just built dist and the agent, so prepack (`npm run build`) is skipped here;
    // that prepack is the build is checked below.
    const manifest = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    assert.equal(manifest.scripts.prepack, 'npm run build', 'packing builds dist and the agent first');
    const r = await runIn(REPO, 'npm', ['pack', '--ignore-scripts', '--pack-destination', packDir, '--json'], {}, 10 * 60_000);
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout.slice(r.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
    tarball = join(packDir, info[0].filename);
    const files = new Set(info[0].files.map((f) => f.path));
    for (const f of ['bin/cordon.js', 'dist/src/cli/main.js', 'dist/src/sdk/index.js', 'dist/src/daemon.js', 'src/runtime/seccomp/docker-default.json', 'package.json', 'README.md']) {
      assert.ok(files.has(f), `${f} is in the package`);
    }
    if (existsSync(join(REPO, 'dist/agent/cordon-agent'))) assert.ok(files.has('dist/agent/cordon-agent'), 'the agent built by prepack is in the package');
    for (const f of files) assert.ok(!f.startsWith('dist/test/') && !f.startsWith('dist/bench/') && !f.startsWith('test/') && !/^src\/.*\.ts$/.test(f), `${f} should not be shipped`);
  });

  test('npm install -g --prefix puts cordon on the PATH of the prefix', { timeout: 12 * 60_000 }, async () => {
    assert.ok(tarball, 'the package was packed');
    prefix = join(scratch, 'prefix');
    // --offline: a test never reaches the registry or GitHub. The two native modules' install scripts
    // (a prebuilt download, else a 2-7 min compile) are npm's business, not cordon's packaging, so they
    // are skipped and the binaries `npm ci` built for this same Node are put in their place.
    const r = await runIn(elsewhere, 'npm', ['install', '-g', '--prefix', prefix, '--offline', '--ignore-scripts', '--no-audit', '--no-fund', tarball], {}, 12 * 60_000);
    assert.equal(r.code, 0, r.stderr);
    const lock = JSON.parse(readFileSync(join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, { hasInstallScript?: boolean; dev?: boolean }> };
    const withScripts = Object.entries(lock.packages).filter(([k, v]) => k && v.hasInstallScript && !v.dev).map(([k]) => k.replace(/^.*node_modules\//, ''));
    assert.deepEqual(withScripts.sort(), [...NATIVE_MODULES].sort(), 'every dependency with an install script is provided for');
    for (const mod of NATIVE_MODULES) {
      const installed = join(prefix, 'lib', 'node_modules', 'cordon', 'node_modules', mod);
      assert.ok(existsSync(installed), `${mod} was installed`);
      cpSync(join(REPO, 'node_modules', mod, 'build', 'Release'), join(installed, 'build', 'Release'), { recursive: true, filter: (f) => !f.includes('/obj') });
    }
    assert.ok(existsSync(join(prefix, 'bin', 'cordon')));
    const v = await runIn(elsewhere, join(prefix, 'bin', 'cordon'), ['--version']);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout.trim(), VERSION);
    const onPath = await runIn(elsewhere, 'sh', ['-c', 'cordon --version'], { PATH: `${join(prefix, 'bin')}:${process.env.PATH}` });
    assert.equal(onPath.stdout.trim(), VERSION);
  });

  test('from another directory: cordon run -- echo hi against the test daemon', async () => {
    assert.ok(prefix, 'installed');
    const r = await runIn(elsewhere, join(prefix, 'bin', 'cordon'), ['run', '--', 'echo', 'hi'], { CORDON_URL: d.url });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hi\n');
    const ls = await runIn(elsewhere, join(prefix, 'bin', 'cordon'), ['ls', '--json'], { CORDON_URL: d.url });
    assert.equal(ls.code, 0, ls.stderr);
    assert.deepEqual(JSON.parse(ls.stdout), [], 'run removed its sandbox');
  });

  test('the SDK imports as cordon/sdk in a project that links the installed package', async () => {
    assert.ok(prefix, 'installed');
    const project = join(scratch, 'project');
    mkdirSync(join(project, 'node_modules'), { recursive: true });
    symlinkSync(join(prefix, 'lib', 'node_modules', 'cordon'), join(project, 'node_modules', 'cordon'));
    writeFileSync(join(project, 'package.json'), '{"type":"module"}');
    writeFileSync(
      join(project, 'use.js'),
      `import { Cordon } from 'cordon/sdk';
const cordon = new Cordon({ url: process.env.CORDON_URL });
const sbx = await cordon.create({ runtime: 'crun' });
const r = await sbx.exec(['sh', '-c', 'echo from-sdk']);
await sbx.remove();
console.log(r.stdout.trim());
`,
    );
    const r = await runIn(project, process.execPath, ['use.js'], { CORDON_URL: d.url });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'from-sdk');
  });

  test('the installed daemon serves (crun with its seccomp profile, --api-key-file)', async () => {
    assert.ok(prefix, 'installed');
    const port = await freePort();
    const dataDir = `/var/lib/cordon-test/install-global-${process.pid}`;
    rmSync(dataDir, { recursive: true, force: true });
    const keyFile = join(scratch, 'key');
    writeFileSync(keyFile, 'installed-daemon-key-0123456789\n', { mode: 0o600 });
    const url = `http://127.0.0.1:${port}`;
    const p = spawn(join(prefix, 'bin', 'cordon'), ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--templates-dir', TEMPLATES_DIR, '--runtime', 'crun', '--max-cpu-pressure', '0', '--api-key-file', keyFile], {
      cwd: elsewhere,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    p.stdout.on('data', (x) => (log += x));
    p.stderr.on('data', (x) => (log += x));
    try {
      let healthy = false;
      for (let i = 0; i < 300 && !healthy && p.exitCode === null; i++) {
        healthy = await fetch(`${url}/v1/health`).then((r) => r.ok, () => false);
        if (!healthy) await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(healthy, `the installed daemon became healthy:\n${log}`);
      assert.equal((await fetch(`${url}/v1/sandboxes`)).status, 401, 'the key from the file is required');
      const r = await runIn(elsewhere, join(prefix, 'bin', 'cordon'), ['run', '--', 'sh', '-c', 'echo ok-from-installed'], { CORDON_URL: url, CORDON_API_KEY: 'installed-daemon-key-0123456789' });
      assert.equal(r.code, 0, r.stderr + log);
      assert.equal(r.stdout, 'ok-from-installed\n');
    } finally {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test('a short or missing --api-key-file is refused before the daemon starts', async () => {
    const short = join(scratch, 'short-key');
    writeFileSync(short, 'abc\n');
    for (const [file, msg] of [[short, /at least 16 characters/], [join(scratch, 'no-such-key'), /cannot be read/]] as const) {
      const r = await runIn(elsewhere, process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:1', '--data-dir', join(scratch, 'unused'), '--api-key-file', file]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, msg);
    }
    assert.ok(!existsSync(join(scratch, 'unused')), 'nothing was created');
  });
});
