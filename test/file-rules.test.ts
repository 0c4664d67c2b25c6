// File rules and events (the file gate, cordon-fsgate) on a bind mount and a volume, under every
// runtime: blocked write/create/remove/rename/read fail with EACCES inside and are recorded, allowed
// operations work, events under a path appear in `cordon events ID --type file`. Hostile cases: a
// directory swapped for a link to outside on the host, device nodes, a killed gate (only its sandbox
// suffers), a hung gate (the watchdog stops it), a daemon restart (rules hold, events resume), and nothing left behind on removal.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { randomBytes } from 'node:crypto';
import type { Sandbox } from '../src/sdk/index.js';
import { cli, RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { mountsMentioning, rejectsWith } from './helpers/assert.js';

const base = `/tmp/cordon-file-rules-${process.pid}`;
const root = join(base, 'root');
const outside = join(base, 'outside');
const secret = `host-secret-${randomBytes(8).toString('hex')}`;
let d: TestDaemon;

const sh = (s: Sandbox, script: string) => s.exec(['sh', '-c', script]);
const rules = [
  { action: 'block' as const, ops: ['write' as const, 'create' as const, 'remove' as const, 'rename' as const], path: '/work/**/*.env' },
  { action: 'block' as const, ops: ['read' as const], path: '/work/private/**' },
  { action: 'block' as const, ops: ['create' as const], path: '/vol/frozen/*' },
];
const gatePids = (id: string) =>
  ['m0', 'v0'].flatMap((k) => {
    const f = join(d.dataDir, 'gates', id, k, 'pid');
    return existsSync(f) ? [Number(readFileSync(f, 'utf8'))] : [];
  });
/** Running (a zombie waiting for its reaper counts as gone). */
const alive = (pid: number) => {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};
async function fileEvents(id: string): Promise<{ message: string; data: { op: string; path?: string; action?: string } }[]> {
  const r = await cli(d, ['events', id, '--type', 'file', '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}
type Ev = { type: string; message: string; data: { op: string; path?: string; action?: string } | null };
/** Events are written in batches (200 ms): poll until `want` shows up (bounded). */
async function eventually(id: string, want: (e: { data: { op: string; path?: string; action?: string } }) => boolean, what: string) {
  const file = async () => ((await d.client.sandbox(id).events_()) as unknown as Ev[]).filter((e) => e.type === 'file' && e.data) as { data: { op: string; path?: string; action?: string } }[];
  for (let i = 0; i < 100; i++) {
    if ((await file()).some(want)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`no file event ${what}: ${JSON.stringify(await file())}`);
}

before(async () => {
  rmSync(base, { recursive: true, force: true });
  mkdirSync(outside, { recursive: true });
  writeFileSync(join(outside, 'secret.txt'), secret);
  for (const rt of RUNTIMES) {
    mkdirSync(join(root, rt, 'private'), { recursive: true });
    mkdirSync(join(root, rt, 'swap'), { recursive: true });
    writeFileSync(join(root, rt, 'app.env'), 'TOKEN=1\n');
    writeFileSync(join(root, rt, 'notes.txt'), 'notes\n');
    writeFileSync(join(root, rt, 'private', 'key'), 'k\n');
    writeFileSync(join(root, rt, 'swap', 'secret.txt'), 'inside\n');
  }
  // The gate watchdog probes every second here (30 s by default), so a hung gate is found quickly.
  d = await startDaemon('file-rules', { args: ['--allow-mount-root', root], env: { CORDON_FSGATE_PROBE_MS: '1000' } });
});
after(async () => {
  for (const s of (await d?.client.list().catch(() => [])) ?? []) await d.client.remove(s.id, { force: true }).catch(() => {});
  assert.deepEqual(mountsMentioning(d.dataDir), [], 'no gate or staging mount stays behind');
  await d?.cleanup();
  assert.equal(readFileSync(join(outside, 'secret.txt'), 'utf8'), secret);
  rmSync(base, { recursive: true, force: true });
});

describe('file rule refusals', () => {
  test('rules outside mounts, bad ops, unbounded globs and bad flags are refused; nothing is created', async () => {
    const mount = { type: 'bind' as const, source: join(root, RUNTIMES[0]), target: '/work' };
    await rejectsWith(d.client.create({ mounts: [mount], file_rules: [{ action: 'block', ops: ['write'], path: '/etc/**' }] }), 'invalid_argument', /not under a bind or overlay mount or a volume/);
    await rejectsWith(d.client.create({ file_events: ['/tmp'] }), 'invalid_argument', /file_events/);
    await rejectsWith(d.client.create({ mounts: [mount], file_rules: [{ action: 'block', ops: ['explode' as 'write'], path: '/work/x' }] }), 'invalid_argument', /ops/);
    await rejectsWith(d.client.create({ mounts: [mount], file_rules: [{ action: 'block', ops: [], path: `/work/${'a'.repeat(600)}` }] }), 'invalid_argument');
    await rejectsWith(d.client.create({ mounts: [mount], file_rules: [{ action: 'block', ops: [], path: '/work/a**b' }] }), 'invalid_argument', /whole path component/);
    await rejectsWith(d.client.create({ mounts: [mount], file_rules: [{ action: 'block', ops: [], path: '/work/../etc' }] }), 'invalid_argument', /\.\./);
    const bad = await cli(d, ['create', '--mount', `type=bind,src=${root}/${RUNTIMES[0]},dst=/work`, '--file-rule', 'deny:write:/work/x']);
    assert.equal(bad.code, 64, bad.stderr);
    assert.match(bad.stderr, /--file-rule/);
    assert.equal((await d.client.list()).length, 0, 'nothing was created');
  });
});

for (const runtime of RUNTIMES) {
  describe(`file rules on ${runtime}`, () => {
    let s: Sandbox;
    const host = join(root, runtime);
    before(async () => {
      await d.client.volumes.create(`fr-${runtime}`, { size: '16m' });
      // Through the CLI: --mount, -v, --file-rule and --file-events as the README shows them.
      const r = await cli(d, [
        'create', '--json', '--runtime', runtime,
        '--mount', `type=bind,src=${host},dst=/work`, '-v', `fr-${runtime}:/vol`,
        ...rules.flatMap((x) => ['--file-rule', `${x.action}:${x.ops.join(',')}:${x.path}`]),
        '--file-events', '/work',
      ]);
      assert.equal(r.code, 0, r.stderr);
      const info = JSON.parse(r.stdout);
      assert.deepEqual(info.config.file_rules, rules, 'inspect echoes the rules');
      assert.deepEqual(info.config.file_events, ['/work']);
      s = d.client.sandbox(info.id);
      assert.equal((await sh(s, 'mkdir -p /vol/frozen')).exit_code, 0);
    });
    after(async () => {
      await s?.remove().catch(() => {});
      await d.client.volumes.remove(`fr-${runtime}`).catch(() => {});
    });

    test('allowed operations work and reach the host', async () => {
      const r = await sh(s, 'cat /work/notes.txt && echo new > /work/n.txt && mv /work/n.txt /work/m.txt && chmod 600 /work/m.txt && cat /work/m.txt && mkdir /work/dir && rmdir /work/dir && cat /work/app.env && echo v > /vol/ok.txt && cat /vol/ok.txt');
      assert.equal(r.exit_code, 0, r.stderr);
      assert.equal(r.stdout, 'notes\nnew\nTOKEN=1\nv\n');
      assert.equal(readFileSync(join(host, 'm.txt'), 'utf8'), 'new\n');
    });

    test('blocked write, create, remove, rename and read fail with EACCES and change nothing', async () => {
      for (const [script, what] of [
        ['echo x > /work/app.env', 'write'],
        ['echo x >> /work/app.env', 'append'],
        ['touch /work/new.env', 'create'],
        ['rm /work/app.env', 'remove'],
        ['mv /work/notes.txt /work/notes.env', 'rename onto a ruled name'],
        ['mv /work/app.env /work/app.txt', 'rename of a ruled file'],
        ['cat /work/private/key', 'read'],
        ['touch /vol/frozen/x', 'create in a volume'],
      ]) {
        const r = await sh(s, script);
        assert.notEqual(r.exit_code, 0, `${what} must fail`);
        assert.match(r.stderr, /Permission denied/, `${what}: ${r.stderr}`);
      }
      assert.equal(readFileSync(join(host, 'app.env'), 'utf8'), 'TOKEN=1\n');
      assert.equal(existsSync(join(host, 'new.env')), false);
      assert.equal(existsSync(join(host, 'notes.env')), false);
      assert.equal(existsSync(join(host, 'app.txt')), false);
    });

    test('blocked and allowed operations under the events path appear in cordon events --type file', async () => {
      await eventually(s.id, (e) => e.data.op === 'write' && e.data.path === '/work/app.env' && e.data.action === 'block', 'blocking the write of /work/app.env');
      await eventually(s.id, (e) => e.data.op === 'create' && e.data.path === '/work/new.env' && e.data.action === 'block', 'blocking the create of /work/new.env');
      await eventually(s.id, (e) => e.data.op === 'rename' && e.data.path === '/work/m.txt' && e.data.action === 'allow', 'allowing the rename to /work/m.txt');
      await eventually(s.id, (e) => e.data.op === 'create' && e.data.path === '/vol/frozen/x' && e.data.action === 'block', 'blocking a create in the volume (blocks are always recorded)');
      const evs = await fileEvents(s.id); // the CLI shows the same events
      assert.ok(evs.some((e) => e.data.op === 'write' && e.data.path === '/work/app.env' && e.data.action === 'block'), 'cordon events --type file lists them');
      assert.ok(evs.every((e) => (e as unknown as Ev).type === 'file'));
      assert.ok(!evs.some((e) => e.data.path === '/vol/ok.txt'), 'allowed operations outside --file-events paths are not reported');
    });

    test('a directory swapped for a link to outside on the host never leads the gate there', async () => {
      assert.equal((await sh(s, 'cat /work/swap/secret.txt')).stdout, 'inside\n');
      renameSync(join(host, 'swap'), join(host, 'swap-old'));
      symlinkSync(outside, join(host, 'swap'));
      const r = await sh(s, 'cat /work/swap/secret.txt 2>&1; ls /work/swap/ 2>&1');
      assert.ok(!r.stdout.includes(secret), `the host's file leaked: ${r.stdout}`);
    });

    test('device nodes cannot be made in the host directory', async () => {
      const r = await sh(s, 'mknod /work/null c 1 3');
      assert.notEqual(r.exit_code, 0);
      assert.equal(existsSync(join(host, 'null')), false);
    });
  });
}

describe('hostile gates and restarts', () => {
  const rt = RUNTIMES.includes('crun') ? 'crun' : RUNTIMES[0];
  const host = join(root, rt);
  const make = () => d.client.create({ runtime: rt, mounts: [{ type: 'bind', source: host, target: '/work' }], file_rules: rules.slice(0, 1), file_events: ['/work'] });
  let a: Sandbox;
  let b: Sandbox;
  before(async () => {
    [a, b] = [await make(), await make()];
  });

  test('a daemon restart keeps the rules, and events resume', async () => {
    const pids = gatePids(a.id);
    await d.stop('SIGKILL');
    await d.restart();
    assert.deepEqual(gatePids(a.id), pids);
    assert.ok(pids.every(alive), 'the gates outlived the daemon');
    const r = await sh(a, 'echo x > /work/after-restart.env');
    assert.match(r.stderr, /Permission denied/);
    await eventually(a.id, (e) => e.data.path === '/work/after-restart.env' && e.data.action === 'block', 'after the restart');
  });

  test('a killed gate fails only its own sandbox; removal leaves nothing behind', async () => {
    const [pid] = gatePids(a.id);
    process.kill(pid, 'SIGKILL');
    const r = await sh(a, 'cat /work/notes.txt');
    assert.notEqual(r.exit_code, 0, 'file operations through a dead gate fail');
    await eventually(a.id, (e) => e.data.op === 'gate-exited', 'saying the gate ended');
    assert.equal((await sh(b, 'cat /work/notes.txt')).stdout, 'notes\n', 'the other sandbox is fine');
    assert.equal((await d.client.health()).status, 'ok');
    const bPids = gatePids(b.id);
    // A hung gate (stopped, not dead): the watchdog aborts its connection and kills it; the sandbox's
    // operations fail instead of hanging forever.
    process.kill(bPids[0], 'SIGSTOP');
    const hung = await sh(b, 'cat /work/notes.txt');
    assert.notEqual(hung.exit_code, 0, 'file operations through a hung gate fail once the watchdog stops it');
    await eventually(b.id, (e) => e.data.op === 'gate-exited', 'saying the hung gate was stopped');
    assert.ok(!alive(bPids[0]), 'the hung gate was killed');
    await a.remove();
    await b.remove();
    assert.ok(!bPids.some(alive), 'removal stops the gate');
    assert.equal(existsSync(join(d.dataDir, 'gates', a.id)), false);
    assert.equal(existsSync(join(d.dataDir, 'gates', b.id)), false);
    assert.deepEqual(mountsMentioning(join(d.dataDir, 'gates')), []);
  });
});
