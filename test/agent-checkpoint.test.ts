// The agent across runsc checkpoint and restore, through the Runtime interface and the daemon's agent
// link (no daemon): a process started through the agent keeps running and counting across a
// checkpoint to disk and a restore, and its output stream goes on where it was once the agent
// reconnects. A checkpoint taken while the agent is connected fails (its host socket cannot be
// saved), which is why the link quiesces it first (the seam the checkpoint code uses).
import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BUILT_AGENT, BUILT_SUPERVISOR } from '../src/daemon.js';
import { AgentLink } from '../src/engine/agent/agent-link.js';
import { AgentProcesses } from '../src/engine/agent/agent-processes.js';
import type { AgentProcess } from '../src/engine/agent/agent-process.js';
import { AGENT_INIT, AGENT_PATH, AGENT_RUN_DIR, agentSocketDir, SUPERVISOR_PATH } from '../src/engine/agent/agent-setup.js';
import { BaseTemplate } from '../src/image/base-template.js';
import { SandboxRootfs } from '../src/image/sandbox-rootfs.js';
import { prepareCgroups } from '../src/runtime/cgroup/index.js';
import { RunscRuntime } from '../src/runtime/runsc.js';
import type { ContainerSpec } from '../src/runtime/types.js';
import { newId } from '../src/util/ids.js';
import { until } from './helpers/assert.js';
import { AGENT_MISSING, TEMPLATES_DIR } from './helpers/daemon.js';

describe('the agent across runsc checkpoint and restore', { skip: AGENT_MISSING }, () => {
  const dataDir = `/var/lib/cordon-test/agent-checkpoint-${process.pid}`;
  const rt = new RunscRuntime(join(dataDir, 'run', 'runsc'), { timeoutMs: 60_000 }, 'systrap');
  const rootfs = new SandboxRootfs(join(dataDir, 'sandboxes'));
  const id = newId();
  const events: string[] = [];
  let spec: ContainerSpec;
  let link: AgentLink;
  let procs: AgentProcesses;
  let counter: AgentProcess;
  let out = '';

  const numbers = () => out.trim().split('\n').filter(Boolean).map(Number);

  before(async () => {
    rmSync(dataDir, { recursive: true, force: true });
    mkdirSync(dataDir, { recursive: true });
    await prepareCgroups();
    await rt.check();
    const dirs = await rootfs.prepare(id, await new BaseTemplate(TEMPLATES_DIR).ensure());
    const socketDir = agentSocketDir(dirs.root, dataDir, id);
    mkdirSync(socketDir, { recursive: true, mode: 0o700 });
    spec = {
      id,
      bundleDir: dirs.bundle,
      rootfsDir: dirs.rootfs,
      readOnlyRootfs: false,
      hostname: 'agent-ckpt',
      memoryBytes: 256 * 1024 * 1024,
      pids: 1024,
      tmpfs: [{ path: '/tmp', sizeBytes: 16 * 1024 * 1024 }],
      binds: [
        { source: '/bin/busybox', destination: '/.cordon/busybox', readOnly: true },
        { source: '/usr/bin/tini-static', destination: '/.cordon/tini', readOnly: true },
        { source: BUILT_AGENT, destination: AGENT_PATH, readOnly: true },
        { source: BUILT_SUPERVISOR, destination: SUPERVISOR_PATH, readOnly: true },
        { source: socketDir, destination: AGENT_RUN_DIR, readOnly: true },
      ],
      init: AGENT_INIT,
      hostSockets: true,
    };
    link = new AgentLink({ sandboxId: id, socketDir, event: (m) => events.push(m), isRunning: () => true });
    procs = new AgentProcesses(link);
    await link.start();
    await rt.create(spec);
    assert.equal(await link.waitConnected(30_000), true, 'the agent connected');
  });

  after(async () => {
    procs?.close();
    await link?.close();
    await rt.delete(id, spec?.bundleDir).catch(() => {});
    await rootfs.destroy(id).catch(() => {});
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('a process started through the agent counts on across checkpoint and restore, its stream unbroken', async () => {
    counter = await procs.launch(
      { args: ['/.cordon/busybox', 'sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i; /.cordon/busybox sleep 0.1; done'], env: ['PATH=/bin:/usr/bin'], cwd: '/', uid: 0, gid: 0 },
      { id: 'p-1', cmd: ['counter'], cwd: '/', user: 'root', env: {}, pty: false, startedAt: Date.now() },
    );
    counter.stdout.on('data', (d: Buffer) => (out += d));
    await until('the counter counts', () => numbers().length >= 5);

    // With the agent connected, gVisor cannot save the sandbox: the seam exists for this.
    await assert.rejects(rt.checkpoint(id, join(dataDir, 'refused'), { leaveRunning: true }));

    await link.quiesce();
    assert.equal(link.connected, false);
    const before = numbers().length;
    await rt.checkpoint(id, join(dataDir, 'image'), { leaveRunning: false });
    assert.equal(await rt.status(id), 'missing');

    await rt.restore(spec, join(dataDir, 'image'));
    assert.equal(await link.expectReconnect(30_000), true, 'the restored agent reconnected');
    await until('the count goes on after the restore', () => numbers().length >= before + 10);
    const values = numbers();
    values.forEach((v, i) => assert.equal(v, i + 1, `value ${i + 1} is ${v}: the count restarted or lost lines`));
    assert.equal(events.filter((e) => /broke|did not answer/.test(e)).length, 0, events.join('\n'));
  });

  test('a checkpoint that leaves the sandbox running: the agent is accepted again and the same process answers', async () => {
    await link.quiesce();
    await rt.checkpoint(id, join(dataDir, 'image-2'), { leaveRunning: true });
    assert.equal(await link.expectReconnect(30_000), true);
    const before = numbers().length;
    await until('still counting', () => numbers().length >= before + 5);
    await counter.signal('SIGKILL');
    const exit = await counter.exited;
    assert.equal(exit.exitCode, 137);
  });
});
