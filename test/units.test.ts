// Unit tests of single modules: units, the error registry, exec env/command composition, the state
// machine, the apt mirror lookup, admission decisions, runtime state and capabilities, and the store's
// migration of older rows. No daemon, no sandbox.
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { formatBytes, parseDuration, parseSize } from '../src/util/units.js';
import { CordonError, ERROR_KINDS, codeForStatus, errors, exitCodeFor } from '../src/errors/registry.js';
import { composeCommand, composeEnv } from '../src/engine/exec-env.js';
import { assertAllowed, type Action } from '../src/engine/state-machine.js';
import { debianMirror, hostSources } from '../src/image/apt-mirror.js';
import { admitCount, admitMemory } from '../src/engine/admission.js';
import type { SandboxSpec, SandboxState } from '../src/engine/types.js';
import { hostSandboxCap } from '../src/config.js';
import { capabilitiesOf } from '../src/runtime/capabilities.js';
import { initAlive, initExited, ociState, parseOciState } from '../src/runtime/oci-state.js';
import { MIGRATIONS, openDatabase } from '../src/store/db.js';
import { SandboxStore } from '../src/store/sandboxes.js';

describe('units', () => {
  test('parseSize', () => {
    assert.equal(parseSize('128m'), 128 * 1024 ** 2);
    assert.equal(parseSize('1g'), 1024 ** 3);
    assert.equal(parseSize('1G'), 1024 ** 3);
    assert.equal(parseSize('512Mi'), 512 * 1024 ** 2);
    assert.equal(parseSize('2MiB'), 2 * 1024 ** 2);
    assert.equal(parseSize('64k'), 65536);
    assert.equal(parseSize('1.5k'), 1536);
    assert.equal(parseSize('100'), 100);
    assert.equal(parseSize('100b'), 100);
    assert.equal(parseSize(' 3m '), 3 * 1024 ** 2);
    assert.equal(parseSize(4096), 4096);
    for (const bad of ['', 'abc', '-1m', '1x', '1mm', '1.2.3g', 'm']) assert.equal(parseSize(bad), undefined, bad);
    assert.equal(parseSize(-5), undefined);
    assert.equal(parseSize(1.5), undefined);
    assert.equal(parseSize('99999999999t'), undefined, 'beyond a safe integer');
  });
  test('parseDuration', () => {
    assert.equal(parseDuration('30s'), 30_000);
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration('2d'), 172_800_000);
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('10'), 10_000, 'a bare number is seconds');
    assert.equal(parseDuration('1.5s'), 1500);
    assert.equal(parseDuration(2), 2000);
    assert.equal(parseDuration(0), 0);
    for (const bad of ['', 'soon', '-1s', '1w', '1 s', 's']) assert.equal(parseDuration(bad), undefined, bad);
    assert.equal(parseDuration(-1), undefined);
    assert.equal(parseDuration(Infinity), undefined);
  });
  test('formatBytes', () => {
    assert.equal(formatBytes(0), '0B');
    assert.equal(formatBytes(1023), '1023B');
    assert.equal(formatBytes(1024), '1.0KiB');
    assert.equal(formatBytes(1536 * 1024), '1.5MiB');
    assert.equal(formatBytes(1024 ** 3), '1.0GiB');
  });
});

describe('error registry', () => {
  test('statuses and CLI exit codes', () => {
    const expect: Record<string, [number, number]> = {
      invalid_argument: [400, 64],
      unauthenticated: [401, 77],
      not_found: [404, 66],
      invalid_state: [409, 65],
      payload_too_large: [413, 65],
      too_many_sandboxes: [429, 75],
      insufficient_resources: [503, 69],
      unavailable: [503, 69],
      deadline_exceeded: [504, 124],
      no_space: [507, 73],
    };
    for (const [code, [status, exit]] of Object.entries(expect)) {
      const e = new CordonError(code as keyof typeof ERROR_KINDS, 'm');
      assert.equal(e.status, status, code);
      assert.equal(e.exitCode, exit, code);
      assert.equal(exitCodeFor(code), exit, code);
    }
    assert.equal(exitCodeFor('nonsense'), 70);
    assert.equal(exitCodeFor(undefined), 70);
  });
  test('codeForStatus round-trips the statuses clients see', () => {
    for (const status of [400, 401, 404, 413, 429, 504, 507]) assert.equal(ERROR_KINDS[codeForStatus(status)].status, status);
    assert.equal(codeForStatus(409), 'invalid_state');
    assert.equal(codeForStatus(599), 'internal');
    assert.equal(codeForStatus(418), 'invalid_argument');
  });
  test('errors carry a message that names the field and serialize without the stack', () => {
    const e = errors.invalid('memory', 'must be a size');
    assert.equal(e.message, 'memory: must be a size');
    assert.deepEqual(e.toJSON(), { code: 'invalid_argument', message: 'memory: must be a size', details: { field: 'memory' } });
    assert.equal(errors.sandboxNotFound('abc').status, 404);
    assert.match(errors.wrongState('abc', 'stopped', 'exec', 'Start it.').message, /abc is stopped; cannot exec\. Start it\./);
    assert.equal(e instanceof Error, true);
    assert.equal(e.connectCode, 'invalid_argument');
  });
});

describe('exec env and command', () => {
  const spec = { env: { A: 'sandbox', B: 'sandbox' }, hostname: 'h1' } as unknown as SandboxSpec;
  const user = { name: 'user', uid: 1000, gid: 1000, home: '/home/user', additionalGids: [] };
  test('image < user < sandbox < command', () => {
    const env = composeEnv({ env: ['PATH=/img/bin', 'A=image', 'HOME=/img', 'EQ=a=b', 'NOVALUE'] }, spec, user, { B: 'cmd' });
    const m = Object.fromEntries(env.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
    assert.equal(m.PATH, '/img/bin');
    assert.equal(m.A, 'sandbox');
    assert.equal(m.B, 'cmd');
    assert.equal(m.HOME, '/home/user', "the user's home replaces the image's HOME");
    assert.equal(m.USER, 'user');
    assert.equal(m.HOSTNAME, 'h1');
    assert.equal(m.EQ, 'a=b', 'values keep their = signs');
    assert.equal('NOVALUE' in m, false);
  });
  test("Docker's entrypoint/cmd rules", () => {
    const img = { env: [], entrypoint: ['/ep'], cmd: ['default'] };
    assert.deepEqual(composeCommand(img, undefined, undefined), ['/ep', 'default']);
    assert.deepEqual(composeCommand(img, undefined, ['x']), ['/ep', 'x']);
    assert.deepEqual(composeCommand(img, [], ['x']), ['x']);
    assert.deepEqual(composeCommand(img, ['/other'], undefined), ['/other'], 'a new entrypoint drops the image Cmd');
    assert.deepEqual(composeCommand({ env: [] }, undefined, undefined), []);
  });
});

describe('state machine', () => {
  const allowed: Record<SandboxState, Action[]> = {
    creating: [],
    running: ['stop', 'pause', 'exec', 'files', 'update', 'stats', 'timeout'],
    pausing: ['timeout'],
    paused: ['stop', 'resume', 'stats', 'timeout', 'update'],
    snapshotting: ['stats', 'timeout'],
    restoring: ['timeout'],
    stopped: ['start', 'timeout'],
    error: ['start', 'stop'],
  };
  const actions: Action[] = ['start', 'stop', 'pause', 'resume', 'exec', 'files', 'update', 'stats', 'timeout'];
  for (const state of Object.keys(allowed) as SandboxState[]) {
    test(`${state}`, () => {
      for (const a of actions) {
        if (allowed[state].includes(a)) assert.doesNotThrow(() => assertAllowed('sb1', state, a), `${state} allows ${a}`);
        else {
          assert.throws(() => assertAllowed('sb1', state, a), (e: CordonError) => e.status === 409 && e.message.includes(`is ${state}; cannot ${a}`), `${state} refuses ${a}`);
        }
      }
    });
  }
});

describe('apt mirror from the host sources', () => {
  test('one-line and deb822 sources; the suite with main wins', () => {
    const root = mkdtempSync(join(tmpdir(), 'cordon-apt-'));
    try {
      mkdirSync(join(root, 'sources.list.d'));
      writeFileSync(join(root, 'sources.list'), '# comment\ndeb [arch=amd64] http://one.example/debian bookworm contrib\ndeb-src http://src.example/debian bookworm main\n');
      writeFileSync(join(root, 'sources.list.d', 'b.sources'), 'Types: deb\nURIs: http://deb822.example/debian\nSuites: bookworm bookworm-updates\nComponents: main contrib\n\nTypes: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\nComponents: main\n');
      writeFileSync(join(root, 'sources.list.d', 'a.list'), 'deb http://backports.example/debian bookworm-backports main\n');
      writeFileSync(join(root, 'sources.list.d', 'ignored.txt'), 'deb http://ignored.example/debian bookworm main\n');
      assert.equal(debianMirror('bookworm', root), 'http://deb822.example/debian', 'contrib-only and deb-src lines do not count');
      assert.equal(debianMirror('bookworm-backports', root), 'http://backports.example/debian');
      assert.equal(debianMirror('bookworm-security', root), 'http://sec.example/debian-security');
      assert.equal(debianMirror('trixie', root), undefined);
      assert.equal(hostSources(root).length, 4);
      assert.deepEqual(hostSources(join(root, 'missing')), []);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('admission', () => {
  test('429 at the cap, 503 under the memory floor, with messages that say what to do', async () => {
    assert.doesNotThrow(() => admitCount(1, 2));
    assert.throws(() => admitCount(2, 2), (e: CordonError) => e.status === 429 && /--max-sandboxes/.test(e.message));
    await admitMemory(100, async () => 1000);
    await assert.rejects(admitMemory(2000, async () => 1000), (e: CordonError) => e.status === 503 && /memory/.test(e.message));
  });
});

describe('runtime state and capabilities', () => {
  test('an OCI state names the init by pid and start time; a reused pid is not taken for it', () => {
    const s = ociState(process.pid);
    assert.equal(s.pid, process.pid);
    assert.equal(typeof s.started, 'number');
    assert.equal(initAlive(s), true);
    assert.equal(initAlive({ pid: process.pid, started: s.started! + 1 }), false, 'the same pid, another process');
    assert.equal(initAlive({ pid: process.pid }), true, 'the state of an older daemon (pid only)');
    assert.equal(initAlive(undefined), false);
    for (const bad of [{}, { pid: 'x' }, { pid: -1 }, { pid: 1.5 }, { pid: 5, started: 'y' }]) assert.equal(parseOciState(bad), undefined, JSON.stringify(bad));
    assert.deepEqual(parseOciState({ pid: 5, started: 7 }), { pid: 5, started: 7 });
  });
  test('waiting for an init: at once when it is gone, until aborted while it runs', async () => {
    await initExited({ pid: 2 ** 22 + 12345 }); // above any pid_max: never a process
    await initExited(undefined);
    await assert.rejects(initExited(ociState(process.pid), AbortSignal.timeout(50)));
  });
  test('capabilities decide what used to be decided by name', () => {
    assert.equal(capabilitiesOf('runsc').processLimit, 'rlimit');
    assert.equal(capabilitiesOf('crun').processLimit, 'cgroup');
    assert.equal(capabilitiesOf('crun').terminalResize, 'in-sandbox');
    assert.equal(capabilitiesOf('runc').terminalResize, 'native');
    assert.equal(capabilitiesOf('runsc').networkLink, 'at-start');
    assert.equal(capabilitiesOf('runc').networkLink, 'live');
    assert.deepEqual([hostSandboxCap('runsc', 'systrap', 2), hostSandboxCap('runsc', 'ptrace', 2), hostSandboxCap('crun', 'systrap', 2)], [50, 300, 200]);
  });
  test('migration: a row of an older daemon keeps its init pid as the runtime state', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordon-db-'));
    try {
      const path = join(dir, 'cordon.db');
      const upTo = MIGRATIONS.findIndex((m) => m.includes('runtime_state'));
      const old = new Database(path);
      for (const m of MIGRATIONS.slice(0, upTo)) old.exec(m);
      old.pragma(`user_version = ${upTo}`);
      old.prepare(`INSERT INTO sandboxes (id, state, runtime, config, labels, init_pid, created_at, updated_at) VALUES ('sb1', 'running', 'runsc', '{}', '{}', 4242, 1, 1)`).run();
      old.prepare(`INSERT INTO sandboxes (id, state, runtime, config, labels, created_at, updated_at) VALUES ('sb2', 'stopped', 'crun', '{}', '{}', 1, 1)`).run();
      old.close();
      const db = openDatabase(path);
      const store = new SandboxStore(db);
      assert.deepEqual(store.get('sb1')?.runtimeState, { pid: 4242 });
      assert.equal(store.get('sb2')?.runtimeState, undefined);
      store.update('sb2', { runtimeState: { pid: 7, started: 9 } });
      assert.deepEqual(store.get('sb2')?.runtimeState, { pid: 7, started: 9 });
      assert.equal(store.countIn(['running', 'paused']), 1);
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  test('sandbox rows read again are kept in memory: every write is seen, a rolled-back one is not, no caller shares a record', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordon-db-'));
    try {
      const db = openDatabase(join(dir, 'cordon.db'));
      const store = new SandboxStore(db);
      store.insert({ id: 'a', state: 'creating', runtime: 'runsc', spec: { env: {} } as never, labels: { k: 'v' }, createdAt: 1, updatedAt: 1 });
      assert.equal(store.get('a')?.state, 'creating');
      store.update('a', { state: 'running', labels: { k: 'w' } });
      assert.deepEqual([store.get('a')?.state, store.get('a')?.labels], ['running', { k: 'w' }]);
      const mine = store.get('a')!;
      mine.labels.k = 'changed by a caller';
      mine.state = 'error';
      assert.deepEqual([store.get('a')?.state, store.get('a')?.labels], ['running', { k: 'w' }], "a caller's changes to its record are its own");
      assert.throws(() =>
        db.transaction(() => {
          store.update('a', { state: 'stopped' });
          assert.equal(store.get('a')?.state, 'stopped');
          throw new Error('rolled back');
        })(),
      );
      assert.equal(store.get('a')?.state, 'running', 'a rolled-back update leaves the row as it was');
      store.delete('a');
      assert.equal(store.get('a'), undefined);
      store.insert({ id: 'a', state: 'running', runtime: 'crun', spec: { env: {} } as never, labels: {}, createdAt: 2, updatedAt: 2 });
      assert.equal(store.get('a')?.runtime, 'crun', 'a new row under an old id is read afresh');
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
