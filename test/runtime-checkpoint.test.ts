// Checkpoint and restore through the Runtime interface itself (no daemon): a runsc container whose
// init counts in memory is checkpointed to disk and restored under the same id, and the count goes
// on from where it was. crun and runc declare no checkpoint and refuse with a typed error.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CordonError } from '../src/errors/registry.js';
import { BaseTemplate } from '../src/image/base-template.js';
import { SandboxRootfs } from '../src/image/sandbox-rootfs.js';
import { prepareCgroups } from '../src/runtime/cgroup/index.js';
import { CrunRuntime, RuncRuntime } from '../src/runtime/crun.js';
import { RunscRuntime } from '../src/runtime/runsc.js';
import type { ContainerSpec, Runtime, RuntimeState } from '../src/runtime/types.js';
import { newId } from '../src/util/ids.js';
import { TEMPLATES_DIR } from './helpers/daemon.js';

const BB = '/.cordon/busybox';
// The count lives in the shell's memory; each value is appended to a file on a tmpfs (which gVisor
// keeps in the sandbox's memory too). A restart from zero would write 1 again.
const COUNTER = `i=0; while :; do i=$((i+1)); echo $i >> /tmp/count; ${BB} sleep 0.1; done`;
const CALLS = { timeoutMs: 60_000 };
const execFileP = promisify(execFile);

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Run a shell command in the container as root and collect its output. */
function sh(rt: Runtime, id: string, cmd: string): Promise<{ code: number; out: string }> {
  const h = rt.exec(id, { args: [BB, 'sh', '-c', cmd], env: [], cwd: '/', uid: 0, gid: 0 });
  h.stdin.end();
  let out = '';
  h.stdout.on('data', (d: Buffer) => (out += d));
  h.stderr?.on('data', (d: Buffer) => (out += d));
  return h.exited.then((e) => ({ code: e.exitCode, out }));
}

async function counts(rt: Runtime, id: string): Promise<number[]> {
  const r = await sh(rt, id, 'cat /tmp/count');
  assert.equal(r.code, 0, r.out);
  return r.out.trim().split('\n').filter(Boolean).map(Number);
}

/** The values are 1, 2, 3, … with nothing missing and nothing repeated: the count never restarted. */
function assertUnbroken(values: number[], what: string): void {
  assert.ok(values.length > 0, `${what}: no values`);
  values.forEach((v, i) => assert.equal(v, i + 1, `${what}: value ${i + 1} is ${v} (${values.slice(Math.max(0, i - 3), i + 3).join(',')})`));
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = process.hrtime.bigint();
  const v = await fn();
  return [v, Number(process.hrtime.bigint() - t0) / 1e6];
}

describe('runtime checkpoint and restore (runsc)', () => {
  const dataDir = `/var/lib/cordon-test/runtime-checkpoint-${process.pid}`;
  const rt = new RunscRuntime(join(dataDir, 'run', 'runsc'), CALLS, 'systrap');
  const rootfs = new SandboxRootfs(join(dataDir, 'sandboxes'));
  const id = newId();
  let spec: ContainerSpec;
  let state: RuntimeState;

  before(async () => {
    rmSync(dataDir, { recursive: true, force: true });
    mkdirSync(dataDir, { recursive: true });
    await prepareCgroups();
    await rt.check();
    const source = await new BaseTemplate(TEMPLATES_DIR).ensure();
    const dirs = await rootfs.prepare(id, source);
    spec = {
      id,
      bundleDir: dirs.bundle,
      rootfsDir: dirs.rootfs,
      readOnlyRootfs: false,
      hostname: 'ckpt',
      memoryBytes: 256 * 1024 * 1024,
      pids: 1024,
      tmpfs: [{ path: '/tmp', sizeBytes: 16 * 1024 * 1024 }],
      binds: [
        { source: '/bin/busybox', destination: BB, readOnly: true },
        { source: '/usr/bin/tini-static', destination: '/.cordon/tini', readOnly: true },
      ],
      // Only the init's own descendants survive a restore (gVisor kills what `exec` started).
      init: ['/.cordon/tini', '-s', '-g', '--', BB, 'sh', '-c', COUNTER],
    };
    state = await rt.create(spec);
  });

  after(async () => {
    await rt.delete(id, spec?.bundleDir).catch(() => {});
    await rootfs.destroy(id).catch(() => {});
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('the backend declares memory checkpoints', () => {
    assert.equal(rt.capabilities.checkpoint, 'memory');
  });

  test('checkpoint without leaveRunning: the container is gone; restore under the same id counts on', async (t) => {
    await until('the counter to start', async () => (await counts(rt, id)).length >= 5);
    // One file on the rootfs (host overlay) and one on the tmpfs (the sandbox's memory).
    assert.equal((await sh(rt, id, 'echo kept > /root/before && touch /tmp/before-checkpoint-1')).code, 0);
    const before = (await counts(rt, id)).length;

    const image = join(dataDir, 'image-1');
    const [, checkpointMs] = await timed(() => rt.checkpoint(id, image, { leaveRunning: false }));
    // Memory is written uncompressed where runsc lets us choose, and this runsc then keeps the pages
    // in a file of their own; compressed, they are inside checkpoint.img.
    const help = await execFileP('runsc', ['checkpoint', '--help']).catch((e: { stdout?: string; stderr?: string }) => e);
    const canChoose = /^\s*-compression\b/m.test(`${help.stdout}\n${help.stderr}`);
    assert.equal(existsSync(join(image, 'pages.img')), canChoose, `pages.img ${canChoose ? 'missing: the image was compressed' : 'written by a runsc without --compression'}`);
    // The init exited and the runtime holds nothing of the container any more (memory freed).
    const exit = await rt.wait(id, state, AbortSignal.timeout(30_000));
    assert.equal(exit.oomKilled, false);
    assert.equal(await rt.status(id), 'missing');
    assert.equal((await rt.list()).includes(id), false);
    assert.equal(await rt.adopt(id, state), 'missing');

    const [restored, restoreMs] = await timed(() => rt.restore(spec, image));
    t.diagnostic(`checkpoint ${checkpointMs.toFixed(0)} ms, restore ${restoreMs.toFixed(0)} ms`);
    assert.equal(await rt.adopt(id, restored), 'running');
    assert.equal(await rt.adopt(id, state), 'missing', 'the old state names a process that is gone');
    state = restored;

    const after = await until('the count to go on', async () => {
      const v = await counts(rt, id);
      return v.length > before + 3 && v;
    });
    // A container started afresh would have an empty /tmp, and a counter that started again would write 1 again.
    assert.equal((await sh(rt, id, 'test -e /tmp/before-checkpoint-1')).code, 0, 'the tmpfs came back from the image');
    assertUnbroken(after, 'after restore');
    assert.equal((await sh(rt, id, 'cat /root/before')).out.trim(), 'kept', 'files written before the checkpoint are there');
  });

  test('a checkpoint that fails leaves the sandbox running as it was, and no image', async () => {
    // runsc refuses to save open TCP connections; a wrapper answers checkpoint the way it does then
    // (first line, then a goroutine dump) and passes every other call to the real runsc.
    const wrapper = join(dataDir, 'runsc-refuses-checkpoint');
    const refusal = 'checkpoint failed: checkpointing container: encoding error: save rejected due to unsupported networking state: endpoint cannot be saved in connected state: local 10.0.0.2:40000, remote 10.0.0.1:80:';
    writeFileSync(wrapper, `#!/bin/sh\nfor a in "$@"; do [ "$a" = checkpoint ] && { echo '${refusal}' >&2; echo 'goroutine 1 [running]:' >&2; exit 128; }; done\nexec runsc "$@"\n`, { mode: 0o755 });
    const refusing = new RunscRuntime(join(dataDir, 'run', 'runsc'), { ...CALLS, binary: wrapper }, 'systrap');
    const image = join(dataDir, 'image-refused');
    const before = (await counts(rt, id)).length;
    await assert.rejects(refusing.checkpoint(id, image, { leaveRunning: false }), (e: unknown) => {
      assert.ok(e instanceof CordonError && e.code === 'invalid_state', String(e));
      assert.match(e.message, /TCP connections \(endpoint cannot be saved in connected state: local 10\.0\.0\.2:40000, remote 10\.0\.0\.1:80\); close them and retry/);
      assert.doesNotMatch(e.message, /goroutine/);
      return true;
    });
    assert.equal(await rt.status(id), 'running', 'frozen for the checkpoint, thawed after it failed');
    assert.equal(await rt.adopt(id, state), 'running');
    assert.equal(existsSync(image) || existsSync(`${image}.partial`), false, 'no image, not even part of one');
    const after = await until('the count to go on', async () => {
      const v = await counts(rt, id);
      return v.length > before + 3 && v;
    });
    assertUnbroken(after, 'after a failed checkpoint');
  });

  test('checkpoint with deferDelete: the image is complete, the frozen container waits for delete; restore counts on', async () => {
    const before = (await counts(rt, id)).length;
    const image = join(dataDir, 'image-deferred');
    await rt.checkpoint(id, image, { leaveRunning: false, deferDelete: true });
    assert.ok(existsSync(image) && !existsSync(`${image}.partial`), 'the image is in place');
    assert.notEqual(await rt.status(id), 'missing', 'the container is left for the caller to delete');
    // It does not run on past its image: its kernel stays paused, so not even an exec gets an answer.
    const probe = sh(rt, id, 'echo alive').then(() => 'answered', () => 'failed');
    const outcome = await Promise.race([probe, new Promise((r) => setTimeout(r, 1500, 'no answer'))]);
    assert.notEqual(outcome, 'answered', 'a frozen sandbox runs nothing');
    await rt.delete(id, spec.bundleDir);
    await Promise.race([probe, new Promise((r) => setTimeout(r, 10_000))]); // the delete ends the waiting exec
    assert.equal(await rt.status(id), 'missing');
    state = await rt.restore(spec, image);
    const after = await until('the count to go on', async () => {
      const v = await counts(rt, id);
      return v.length > before + 3 && v;
    });
    assertUnbroken(after, 'after a deferred delete and restore');
  });

  test('checkpoint with leaveRunning: the container runs on; a restore goes back to the checkpoint', async (t) => {
    const image = join(dataDir, 'image-2');
    assert.equal((await sh(rt, id, 'touch /tmp/before-checkpoint-2')).code, 0);
    const [, checkpointMs] = await timed(() => rt.checkpoint(id, image, { leaveRunning: true }));
    assert.equal(await rt.adopt(id, state), 'running', 'the same container runs on');
    assert.equal((await sh(rt, id, 'touch /tmp/after-checkpoint')).code, 0);
    const atCheckpoint = (await counts(rt, id)).length;
    const ranOn = await until('the original to count on', async () => {
      const v = await counts(rt, id);
      return v.length > atCheckpoint + 5 && v;
    });
    assertUnbroken(ranOn, 'after a checkpoint that left it running');

    await rt.delete(id, spec.bundleDir);
    const [restored, restoreMs] = await timed(() => rt.restore(spec, image));
    t.diagnostic(`checkpoint (leave running) ${checkpointMs.toFixed(0)} ms, restore ${restoreMs.toFixed(0)} ms`);
    state = restored;
    // The tmpfs is as it was at the checkpoint: the marker written after it is not there.
    assert.equal((await sh(rt, id, 'test -e /tmp/before-checkpoint-2')).code, 0, 'the tmpfs came back from the image');
    assert.notEqual((await sh(rt, id, 'test -e /tmp/after-checkpoint')).code, 0, 'state from after the checkpoint came back');
    const again = await until('the restored count to go on', async () => {
      const v = await counts(rt, id);
      return v.length > 3 && v;
    });
    assertUnbroken(again, 'after restoring the second image');
  });
});

describe('runtimes without checkpoint', () => {
  for (const rt of [new CrunRuntime('/nonexistent', CALLS), new RuncRuntime('/nonexistent', CALLS)]) {
    test(`${rt.name} declares none and refuses with not_implemented naming the capability`, async () => {
      assert.equal(rt.capabilities.checkpoint, 'none');
      const refused = (e: unknown) => e instanceof CordonError && e.code === 'not_implemented' && /capability checkpoint: none/.test(e.message);
      await assert.rejects(rt.checkpoint('sb1', '/nonexistent/image', { leaveRunning: false }), refused);
      await assert.rejects(rt.restore({ id: 'sb1' } as ContainerSpec, '/nonexistent/image'), refused);
    });
  }
});
