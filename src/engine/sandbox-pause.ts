import { existsSync } from 'node:fs';
import { lstat, readdir, readFile, rename, rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { CordonError } from '../errors/registry.js';
import { AgentProcess } from './agent/agent-process.js';
import type { LiveSandbox } from './live-sandbox.js';
import type { SandboxManager } from './sandbox-manager.js';
import { assertAllowed } from './state-machine.js';
import type { SandboxRecord } from './types.js';

/** Where a paused sandbox keeps what it needs to come back, inside its own directory. */
const RECORD = 'pause.json';
const IMAGE = 'checkpoint';
/** Free space a checkpoint must leave on the data directory's file system, beyond the image itself. */
const DISK_MARGIN_BYTES = 256 * 1024 * 1024;
/** How long a pause waits for exec-path processes to end before the checkpoint. */
const EXEC_END_WAIT_MS = 5_000;
/** How long a resume waits for the agent before the exec path serves the sandbox. */
const AGENT_WAIT_MS = 10_000;

/**
 * What a paused sandbox keeps on disk next to its files (so a daemon restart or a host reboot loses
 * nothing): how it was paused, and the time its timeout clock had left.
 */
const pauseRecord = z.object({
  /** disk: checkpointed (memory and processes in `checkpoint/`, no container); freeze: cgroup-frozen in memory. */
  kind: z.enum(['disk', 'freeze']),
  pausedAt: z.number(),
  /** Milliseconds the timeout clock had left (absent: no timeout). */
  remainingMs: z.number().int().min(0).optional(),
  imageBytes: z.number().int().min(0).optional(),
  /** Paused by `serve --idle-pause`: the next call resumes it (also after a daemon restart). */
  idle: z.boolean().optional(),
});
export type PauseRecord = z.infer<typeof pauseRecord>;

/**
 * Pause and resume. Where the runtime checkpoints memory (runsc) a pause writes the sandbox's
 * processes and memory to its own directory and ends the container, its network namespace and its
 * volume mounts: it then costs disk only. Its overlay stays mounted while this daemon runs (a mount
 * holds no memory worth the ~20 ms a `mount` costs at resume; a daemon start unmounts it, a resume
 * mounts it again). A resume attaches a new namespace under the same policy and restores the
 * container under the same id. Elsewhere (crun, runc) a pause
 * freezes the cgroup in memory. Either way the timeout clock stops and starts again at resume.
 * Callers hold the sandbox's lock.
 */
export class SandboxPauses {
  /**
   * Containers a pause to disk left to end in the background (runsc's sandbox process takes a second or
   * more to exit after the image is complete); every locked operation on the sandbox waits for it first.
   */
  private readonly ending = new Map<string, Promise<void>>();
  /** Sandboxes whose container such a teardown removed (a resume need not delete it again). */
  private readonly ended = new Set<string>();

  constructor(private readonly mgr: SandboxManager) {}

  /** Resolves once no teardown of the sandbox's container runs in the background (never rejects). */
  settled(id: string): Promise<void> {
    return this.ending.get(id) ?? Promise.resolve();
  }

  /** Wait for every background teardown (the daemon is closing). */
  async settleAll(): Promise<void> {
    await Promise.all([...this.ending.values()]);
  }

  private recordPath(id: string): string {
    return join(this.mgr.rootfs.dirs(id).root, RECORD);
  }

  imageDir(id: string): string {
    return join(this.mgr.rootfs.dirs(id).root, IMAGE);
  }

  /** The pause record of a paused sandbox (undefined when it has none: paused by an older daemon). */
  async record(id: string): Promise<PauseRecord | undefined> {
    const text = await readFile(this.recordPath(id), 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    const parsed = pauseRecord.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  }

  private async save(id: string, rec: PauseRecord): Promise<void> {
    const path = this.recordPath(id);
    await writeFile(`${path}.tmp`, JSON.stringify(rec), { mode: 0o600 });
    await rename(`${path}.tmp`, path);
  }

  /** Whether the sandbox is paused to disk (no container; a resume restores it from its image). */
  async onDisk(id: string): Promise<boolean> {
    return (await this.record(id))?.kind === 'disk' && existsSync(this.imageDir(id));
  }

  /**
   * `freeze` keeps it in memory even where the runtime could checkpoint (the first step of an idle
   * pause: it costs no CPU and wakes in milliseconds); `idle` marks it as paused for idleness.
   */
  async pause(id: string, opts: { freeze?: boolean; idle?: boolean } = {}): Promise<SandboxRecord> {
    const rec = this.mgr.get(id);
    assertAllowed(id, rec.state, 'pause');
    const rt = this.mgr.runtimeFor(rec.runtime);
    const started = Date.now();
    // A sandbox its timeout paused gets its whole timeout again when it resumes.
    let remainingMs = rec.expiresAt ? Math.max(0, rec.expiresAt - started) : undefined;
    if (remainingMs !== undefined && remainingMs < 1000) remainingMs = rec.spec.timeoutMs || undefined;
    // Without the agent every process is the exec path's, which gVisor cannot carry across a restore
    // (and a restore after ending them was seen to panic): such a sandbox is frozen in memory instead.
    const withAgent = !!this.mgr.live.get(id)?.agent;
    const idle = opts.idle ? { idle: true } : {};
    if (opts.freeze || rt.capabilities.checkpoint !== 'memory' || !withAgent) {
      const why = opts.freeze ? 'idle' : rt.capabilities.checkpoint !== 'memory' ? `runtime ${rt.name} cannot checkpoint` : 'it runs without the agent, whose processes alone survive a checkpoint';
      await rt.freeze(id);
      this.mgr.unschedule(id);
      await this.save(id, { kind: 'freeze', pausedAt: started, remainingMs, ...idle });
      this.mgr.store.update(id, { state: 'paused', expiresAt: undefined });
      this.event(id, 'paused', `sandbox paused (frozen in memory: ${why}) in ${Date.now() - started} ms`, { ms: Date.now() - started, kind: 'freeze' });
      return this.mgr.get(id);
    }
    await this.checkSpace(id, rec);
    this.mgr.store.update(id, { state: 'pausing' });
    const live = this.mgr.live.get(id);
    const execPath = live ? await endExecPathProcesses(live) : 0;
    const image = this.imageDir(id);
    const prepMs = Date.now() - started;
    let quiesceMs = 0;
    try {
      // The agent's host socket cannot be saved: it hangs up first and comes back after the restore.
      await live?.agent?.quiesce();
      quiesceMs = Date.now() - started - prepMs;
      this.mgr.boot.unwatch(id);
      await rt.checkpoint(id, image, { leaveRunning: false, deferDelete: true });
    } catch (e) {
      // The runtime left the sandbox running as it was: watch it again and take the agent back.
      this.mgr.boot.rewatch(id);
      this.mgr.store.update(id, { state: 'running' });
      void live?.agent?.expectReconnect(AGENT_WAIT_MS);
      const why = (e as Error).message;
      this.event(id, 'error', `pause failed after ${Date.now() - started} ms: ${why}`, { ms: Date.now() - started, op: 'pause' });
      if (e instanceof CordonError) throw e;
      throw new CordonError('internal', `pausing sandbox ${id} failed: ${why}`, { sandbox_id: id });
    }
    const checkpointMs = Date.now() - started;
    this.mgr.unschedule(id);
    const imageBytes = await dirBytes(image).catch(() => 0);
    // The image is complete and the record says so: from here a daemon restart settles the sandbox as
    // paused (supervisor), whatever of the container the background teardown had not ended yet.
    await this.save(id, { kind: 'disk', pausedAt: started, remainingMs, imageBytes, ...idle });
    this.mgr.store.update(id, { state: 'paused', runtimeState: undefined, expiresAt: undefined });
    this.endInBackground(id, rec.runtime);
    const ms = Date.now() - started;
    const lost = execPath ? `; ${execPath} process(es) started through the runtime's exec path (no agent) were ended first (gVisor restores only the init's tree)` : '';
    this.event(id, 'paused', `sandbox paused to disk in ${ms} ms (checkpoint ${checkpointMs} ms, image ${imageBytes} bytes); its memory is freed as its container ends${lost}`, { ms, checkpointMs, prepMs, quiesceMs, imageBytes, kind: 'disk', execPathProcesses: execPath });
    return this.mgr.get(id);
  }

  /**
   * End the frozen container a checkpoint left, then give back its namespace and volume mounts (a
   * resume makes them again). It starts after the pause has answered (the daemon's first process
   * start blocks its event loop for as long as a fork of it takes: ~10-30 ms here); the sandbox's lock
   * makes the next operation wait.
   */
  private endInBackground(id: string, runtime: SandboxRecord['runtime']): void {
    this.ended.delete(id);
    const started = Date.now();
    const work = (async () => {
      await new Promise((r) => setImmediate(r));
      let failed: string | undefined;
      await this.mgr.runtimeFor(runtime).delete(id, this.mgr.rootfs.dirs(id).bundle).then(
        () => this.ended.add(id),
        (e: Error) => (failed = e.message),
      );
      await this.mgr.net?.detach(id).catch(() => {});
      await this.mgr.storage?.release(id).catch(() => {});
      const ms = Date.now() - started;
      if (!this.mgr.store.get(id)) return;
      if (failed) this.event(id, 'error', `ending the paused sandbox's container failed after ${ms} ms: ${failed}; a resume or removal tries again`, { ms, op: 'pause-teardown' });
      else this.event(id, 'released', `the paused sandbox's container ended and its memory was freed ${ms} ms after the pause answered`, { ms });
    })().catch(() => {});
    const done = work.finally(() => {
      if (this.ending.get(id) === done) this.ending.delete(id);
    });
    this.ending.set(id, done);
  }

  async resume(id: string): Promise<SandboxRecord> {
    const rec = this.mgr.get(id);
    assertAllowed(id, rec.state, 'resume');
    const rt = this.mgr.runtimeFor(rec.runtime);
    const pause = await this.record(id);
    const started = Date.now();
    const expiresAt = pause?.remainingMs !== undefined ? started + pause.remainingMs : rec.expiresAt;
    if (pause?.kind !== 'disk') {
      await rt.resume(id);
      await this.drop(id);
      this.mgr.store.update(id, { state: 'running', expiresAt });
      this.mgr.schedule(id, expiresAt);
      this.event(id, 'resumed', `sandbox resumed (thawed) in ${Date.now() - started} ms`, { ms: Date.now() - started, kind: 'freeze' });
      return this.mgr.get(id);
    }
    const image = this.imageDir(id);
    if (!existsSync(image)) {
      throw new CordonError('invalid_state', `sandbox ${id} was paused to disk but its checkpoint image is gone; stop it (cordon stop ${id}) and start it again from its files`, { sandbox_id: id });
    }
    this.mgr.store.update(id, { state: 'restoring' });
    // This daemon ended the container itself after the pause: no leftover to delete before the restore.
    const containerGone = this.ended.delete(id);
    try {
      const out = await this.mgr.boot.restore(this.mgr.get(id), await this.mgr.imageConfig(id), image, { expiresAt, agentWaitMs: AGENT_WAIT_MS, containerGone });
      const ms = Date.now() - started;
      await this.drop(id, { background: true });
      this.event(id, 'resumed', `sandbox resumed from disk in ${ms} ms${out.agentReconnected ? ', agent reconnected' : ''}`, { ms, kind: 'disk', agent: out.agentReconnected, ...out.phases });
      return this.mgr.get(id);
    } catch (e) {
      // The image stays: the sandbox is paused as before and a resume can be tried again.
      this.mgr.boot.unwatch(id);
      await this.mgr.runtimeFor(rec.runtime).delete(id, this.mgr.rootfs.dirs(id).bundle).catch(() => {});
      await this.mgr.net?.detach(id).catch(() => {});
      await this.mgr.storage?.release(id).catch(() => {});
      await this.mgr.rootfs.unmount(id).catch(() => {});
      this.mgr.store.update(id, { state: 'paused', runtimeState: undefined, expiresAt: undefined });
      const why = (e as Error).message;
      this.event(id, 'error', `restore failed after ${Date.now() - started} ms: ${why}; the sandbox stays paused`, { ms: Date.now() - started, op: 'restore' });
      throw new CordonError(e instanceof CordonError ? e.code : 'internal', `resuming sandbox ${id} failed: ${why}; it stays paused (retry, or stop it to start it from its files)`, { sandbox_id: id });
    }
  }

  /** Record a pause to disk whose record was never written (the daemon stopped right after the checkpoint). */
  async keep(id: string, expiresAt: number | undefined): Promise<void> {
    const now = Date.now();
    await this.save(id, { kind: 'disk', pausedAt: now, remainingMs: expiresAt ? Math.max(0, expiresAt - now) : undefined });
  }

  /** A paused sandbox's time left changes (setTimeout while paused): kept until it resumes. */
  async setRemaining(id: string, timeoutMs: number): Promise<void> {
    const pause = await this.record(id);
    if (!pause) return;
    await this.save(id, { ...pause, remainingMs: timeoutMs > 0 ? timeoutMs : undefined });
  }

  /** Stop a sandbox paused to disk: there is no container; the image goes, the files stay. */
  async stopFromDisk(id: string): Promise<void> {
    this.mgr.forget(id);
    await this.mgr.runtimeFor(this.mgr.get(id).runtime).delete(id, this.mgr.rootfs.dirs(id).bundle).catch(() => {});
    await this.mgr.net?.detach(id).catch(() => {});
    await this.mgr.storage?.release(id).catch(() => {});
    await this.mgr.rootfs.unmount(id);
    await this.drop(id);
  }

  /**
   * Forget the pause: its record and its image. `background`: the image is moved aside at once and
   * deleted after the caller has answered (unlinking a large image takes tens of ms); a later drop,
   * pause or removal of the sandbox's directory takes what is left.
   */
  async drop(id: string, opts: { background?: boolean } = {}): Promise<void> {
    const image = this.imageDir(id);
    await rm(this.recordPath(id), { force: true });
    await rm(`${image}.partial`, { recursive: true, force: true });
    await rm(`${image}.old`, { recursive: true, force: true });
    if (!opts.background) return rm(image, { recursive: true, force: true });
    if (!(await rename(image, `${image}.old`).then(() => true, () => false))) return;
    setImmediate(() => void rm(`${image}.old`, { recursive: true, force: true }).catch(() => {}));
  }

  /**
   * A checkpoint holds the sandbox's memory: refuse before writing one that would fill the disk the
   * data directory is on (a sandbox filling its memory must not take the host's disk with it).
   */
  private async checkSpace(id: string, rec: SandboxRecord): Promise<void> {
    const used = await this.mgr.runtimeFor(rec.runtime).stats(id).then((s) => s.memoryUsageBytes, () => rec.spec.memoryBytes);
    const need = used + DISK_MARGIN_BYTES;
    const fs = await statfs(this.mgr.rootfs.dirs(id).root);
    const free = fs.bavail * fs.bsize;
    if (free < need) {
      throw new CordonError(
        'no_space',
        `pause: sandbox ${id} uses ${mib(used)} of memory, and its checkpoint needs up to that plus ${mib(DISK_MARGIN_BYTES)} free; the data directory's file system has ${mib(free)} free. Free disk space, or stop the sandbox instead (its files are kept, its processes end)`,
        { sandbox_id: id, need_bytes: need, free_bytes: free },
      );
    }
  }

  private event(id: string, type: string, message: string, data: Record<string, unknown>): void {
    this.mgr.store.addEvent(id, type, message, data);
  }
}

/**
 * gVisor cannot restore a process `runsc exec` started while it runs (its stdio are the host's pipes:
 * the restore fails with "bad file number"), and would end it at restore anyway: only the agent's
 * processes, in the init's tree, come back. Such processes (the exec path: no agent, or no process
 * slot left inside for it) are ended before the checkpoint; returns how many.
 */
async function endExecPathProcesses(live: LiveSandbox): Promise<number> {
  const procs = live.processes
    .list()
    .filter((p) => p.running)
    .map((p) => live.processes.get(p.id))
    .filter((mp) => !(mp.handle instanceof AgentProcess));
  await Promise.all(procs.map((mp) => mp.handle.signal('SIGKILL').catch(() => {})));
  const ended = Promise.all(procs.map((mp) => mp.handle.exited.catch(() => undefined)));
  await Promise.race([ended, new Promise((r) => setTimeout(r, EXEC_END_WAIT_MS).unref())]);
  return procs.length;
}

const mib = (n: number) => `${Math.ceil(n / (1024 * 1024))} MiB`;

/** Bytes of the files runsc wrote (a flat directory of images; nothing there is followed). */
async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir)) {
    const st = await lstat(join(dir, name));
    if (st.isFile()) total += st.size;
  }
  return total;
}
