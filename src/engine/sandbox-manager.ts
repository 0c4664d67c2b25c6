import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DaemonConfig, RuntimeName } from '../config.js';
import { CordonError, errors } from '../errors/registry.js';
import type { SandboxRootfs } from '../image/sandbox-rootfs.js';
import type { SandboxStore } from '../store/sandboxes.js';
import { newId } from '../util/ids.js';
import { pidAlive, sleep } from '../util/proc.js';
import type { Runtime } from '../runtime/types.js';
import { HELPER_DIR } from '../runtime/oci-spec.js';
import { Admission } from './admission.js';
import type { NetworkService } from '../net/service.js';
import { needsNamespace } from '../net/types.js';
import { networkBinds, networkEnv } from '../net/sandbox-files.js';
import { composeCommand } from './exec-env.js';
import { ExpiryTimers } from './expiry.js';
import { KeyedLock } from './keyed-lock.js';
import { SandboxNetwork } from './sandbox-network.js';
import { LiveSandbox } from './live-sandbox.js';
import { MetricsHistory } from './metrics-history.js';
import { runcAccountFilesProblem } from './users.js';
import type { RootfsResolver } from './sources.js';
import { assertAllowed } from './state-machine.js';
import type { ImageConfig, SandboxRecord, SandboxSpec, SandboxState } from './types.js';

export interface CreateInput extends Omit<SandboxSpec, 'runtime' | 'memoryBytes' | 'pids' | 'timeoutMs' | 'env' | 'tmpfs' | 'readOnlyRootfs'> {
  runtime?: RuntimeName;
  memoryBytes?: number;
  pids?: number;
  timeoutMs?: number;
  env?: Record<string, string>;
  tmpfs?: SandboxSpec['tmpfs'];
  readOnlyRootfs?: boolean;
  labels?: Record<string, string>;
  entrypoint?: string[];
}

export interface ListFilter {
  state?: SandboxState[];
  labels?: Record<string, string>;
}

export interface Helpers {
  busybox: string;
  tini: string;
}

/**
 * Sandbox lifecycle: create, start, stop, pause, resume, remove, timeouts. It owns the state machine
 * and keeps the store, the runtime and the on-disk rootfs in agreement, undoing partial work on failure.
 */
export class SandboxManager {
  readonly live = new Map<string, LiveSandbox>();
  private readonly lock = new KeyedLock();
  private readonly expiry: ExpiryTimers;
  /** What a create must pass first: a create slot, host memory and CPU pressure, the sandbox cap. */
  readonly admission: Admission;
  /** Set by the daemon; sandboxes with a network spec need it. */
  net?: NetworkService;
  /** Network rules and port forwards of existing sandboxes. */
  readonly network = new SandboxNetwork(this);
  /** Resource samples of running sandboxes over time (started by the daemon). */
  readonly metrics = new MetricsHistory(this);

  constructor(
    readonly cfg: DaemonConfig,
    readonly store: SandboxStore,
    readonly runtimes: Map<RuntimeName, Runtime>,
    readonly rootfs: SandboxRootfs,
    readonly sources: RootfsResolver,
    readonly helpers: Helpers,
  ) {
    this.admission = new Admission(cfg);
    this.expiry = new ExpiryTimers(store, (id) => this.remove(id, true));
  }

  runtimeFor(name: RuntimeName): Runtime {
    const rt = this.runtimes.get(name);
    if (!rt) throw errors.invalid('runtime', `unknown runtime ${name}; use one of ${[...this.runtimes.keys()].join(', ')}`);
    return rt;
  }

  /** Run `fn` with the sandbox's lifecycle lock held (for collaborators such as SandboxNetwork). */
  exclusive<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.lock.run(id, fn);
  }

  get(id: string): SandboxRecord {
    const rec = this.store.get(id);
    if (!rec) throw errors.sandboxNotFound(id);
    return rec;
  }

  list(filter: ListFilter = {}): SandboxRecord[] {
    return this.store.list().filter(
      (r) =>
        (!filter.state?.length || filter.state.includes(r.state)) &&
        Object.entries(filter.labels ?? {}).every(([k, v]) => r.labels[k] === v),
    );
  }

  /** The running sandbox's live handles (processes, files); 409 when it is not running. */
  running(id: string, action: 'exec' | 'files' | 'stats' | 'update' = 'exec'): LiveSandbox {
    const rec = this.get(id);
    assertAllowed(id, rec.state, action);
    const live = this.live.get(id);
    if (!live) throw errors.wrongState(id, rec.state, action, 'The daemon lost track of it; stop and start it again.');
    return live;
  }

  async create(input: CreateInput, progress?: (line: string) => void): Promise<SandboxRecord> {
    const runtime = input.runtime ?? this.cfg.defaultRuntime;
    this.runtimeFor(runtime);
    const timeoutMs = input.timeoutMs ?? this.cfg.defaultTimeoutMs;
    if (timeoutMs > this.cfg.maxTimeoutMs) throw errors.invalid('timeout', `at most ${this.cfg.maxTimeoutMs / 1000}s`);
    if (input.network && input.network.mode !== 'none') {
      if (!this.net) throw errors.invalid('network', 'this daemon has no network capability');
      this.net.validate(input.network);
    }
    const release = await this.admission.enter();
    try {
      return await this.createAdmitted(input, runtime, timeoutMs, progress);
    } finally {
      release();
    }
  }

  private async createAdmitted(input: CreateInput, runtime: RuntimeName, timeoutMs: number, progress?: (line: string) => void): Promise<SandboxRecord> {
    const id = newId();
    const spec: SandboxSpec = {
      template: input.image ? undefined : (input.template ?? 'base'),
      image: input.image,
      pullPolicy: input.image ? input.pullPolicy : undefined,
      runtime,
      env: { ...(input.env ?? {}), ...networkEnv(input.network) },
      workdir: input.workdir,
      cmd: input.cmd,
      user: input.user,
      cpus: input.cpus,
      memoryBytes: input.memoryBytes ?? this.cfg.defaultMemoryBytes,
      pids: input.pids ?? this.cfg.defaultPids,
      diskBytes: input.diskBytes,
      timeoutMs,
      readOnlyRootfs: input.readOnlyRootfs ?? false,
      tmpfs: input.tmpfs ?? [],
      hostname: input.hostname ?? id.slice(0, 12),
      noNewPrivileges: input.noNewPrivileges ?? false,
      network: input.network,
    };
    const now = Date.now();
    const rec: SandboxRecord = { id, state: 'creating', runtime, spec, labels: input.labels ?? {}, createdAt: now, updatedAt: now };
    this.admission.admitCount(this.store.countLive());
    this.store.insert(rec);
    return this.lock.run(id, async () => {
      try {
        const source = await this.sources.resolve({ template: spec.template, image: spec.image, pullPolicy: spec.pullPolicy }, progress);
        await this.rootfs.prepare(id, source, spec.diskBytes).catch((e: Error) => {
          throw e instanceof RangeError ? errors.invalid('disk', e.message) : e;
        });
        await writeFile(join(this.rootfs.dirs(id).root, 'image-config.json'), JSON.stringify(source.config));
        await this.boot(rec, source.config);
        // Docker's rule: cmd replaces the image's Cmd, entrypoint (even []) replaces its Entrypoint.
        const main = composeCommand(source.config, input.entrypoint, spec.cmd);
        if (main.length) await this.live.get(id)!.startMain(main);
        this.store.addEvent(id, 'created', `sandbox created from ${source.ref} on ${runtime}`);
        return this.get(id);
      } catch (e) {
        throw await this.rollBackCreate(id, e);
      }
    });
  }

  /**
   * Undo a create that failed: nothing of it stays behind. When undoing fails too (a wedged runtime),
   * the record stays in state error saying so, and `rm -f` finishes the job later.
   */
  private async rollBackCreate(id: string, e: unknown): Promise<CordonError> {
    const msg = (e as Error).message;
    try {
      await this.teardown(id);
    } catch (te) {
      const reason = `create failed: ${msg}; cleaning up failed too: ${(te as Error).message}; remove it with cordon rm -f ${id}`;
      return this.failed(id, reason, e, `creating sandbox ${id} failed and it stays in state error: ${reason}`);
    }
    this.store.delete(id);
    if (e instanceof CordonError && e.code !== 'deadline_exceeded') return e;
    return new CordonError(e instanceof CordonError ? e.code : 'internal', `creating the sandbox failed and was rolled back: ${msg}`);
  }

  /** Start the container on an already prepared rootfs and mark the sandbox running. */
  private async boot(rec: SandboxRecord, image: ImageConfig): Promise<void> {
    const { id, spec } = rec;
    const dirs = this.rootfs.dirs(id);
    await this.rootfs.mount(id);
    const runcProblem = spec.runtime === 'runc' ? await runcAccountFilesProblem(dirs.rootfs) : undefined;
    if (runcProblem) throw errors.invalid('runtime', `${runcProblem}; use --runtime crun or runsc for this image`);
    const added = (spec.network?.addHosts ?? []).map((h) => `${h.ip}\t${h.host}\n`).join('');
    await writeFile(join(dirs.bundle, 'hosts'), `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${spec.hostname}\n${added}`);
    let netnsPath: string | undefined;
    const extraBinds: { source: string; destination: string; readOnly: boolean }[] = [];
    if (spec.network && needsNamespace(spec.network)) {
      if (!this.net) throw errors.invalid('network', 'this daemon has no network capability');
      const link = await this.net.attach(id, spec.network);
      netnsPath = link.netnsPath;
      extraBinds.push(...(await networkBinds(this.net, link, dirs.bundle, dirs.rootfs)));
    }
    await writeFile(join(dirs.bundle, 'hostname'), `${spec.hostname}\n`);
    const rt = this.runtimeFor(spec.runtime);
    await rt.delete(id, this.rootfs.dirs(id).bundle).catch(() => {});
    const { initPid } = await rt.create({
      id,
      bundleDir: dirs.bundle,
      rootfsDir: dirs.rootfs,
      readOnlyRootfs: spec.readOnlyRootfs,
      hostname: spec.hostname!,
      cpus: spec.cpus,
      memoryBytes: spec.memoryBytes,
      pids: spec.pids,
      tmpfs: spec.tmpfs,
      binds: [
        { source: this.helpers.busybox, destination: `${HELPER_DIR}/busybox`, readOnly: true },
        { source: this.helpers.tini, destination: `${HELPER_DIR}/tini`, readOnly: true },
        { source: join(dirs.bundle, 'hosts'), destination: '/etc/hosts', readOnly: true },
        { source: join(dirs.bundle, 'hostname'), destination: '/etc/hostname', readOnly: true },
        ...extraBinds,
      ],
      netnsPath,
      noNewPrivileges: !!spec.noNewPrivileges,
    }).catch(async (e: Error) => {
      await this.net?.detach(id);
      throw e;
    });
    const now = Date.now();
    const expiresAt = spec.timeoutMs > 0 ? now + spec.timeoutMs : undefined;
    this.store.update(id, { state: 'running', stateReason: undefined, initPid, startedAt: now, expiresAt });
    this.attach(id, rt, image, initPid);
    this.schedule(id, expiresAt);
  }

  /** Give a running sandbox its in-memory handles (also used after a daemon restart). */
  attach(id: string, rt: Runtime, image: ImageConfig, initPid: number): LiveSandbox {
    const live = new LiveSandbox(this.get(id), rt, image, this.rootfs.dirs(id).rootfs, initPid, this.cfg, (type, message) => this.store.addEvent(id, type, message));
    this.live.set(id, live);
    return live;
  }

  async start(id: string): Promise<SandboxRecord> {
    return this.lock.run(id, async () => {
      const rec = this.get(id);
      assertAllowed(id, rec.state, 'start');
      const image = await this.imageConfig(id);
      try {
        await this.boot(rec, image);
      } catch (e) {
        // Give back what boot took (container, network, mounts); the sandbox's files stay for a retry.
        const undo = await this.unboot(id, rec.runtime).then(
          () => '',
          (ue: Error) => `; cleaning up failed too: ${ue.message}`,
        );
        const reason = `start failed: ${(e as Error).message}${undo}`;
        throw this.failed(id, reason, e, `starting sandbox ${id} failed: ${(e as Error).message}${undo}`);
      }
      this.store.addEvent(id, 'started', 'sandbox started');
      return this.get(id);
    });
  }

  async stop(id: string, graceMs = 10_000): Promise<SandboxRecord> {
    return this.lock.run(id, async () => {
      const rec = this.get(id);
      assertAllowed(id, rec.state, 'stop');
      try {
        await this.halt(rec, graceMs);
      } catch (e) {
        this.forget(id);
        const reason = `stop failed: ${(e as Error).message}; remove it with cordon rm -f ${id}`;
        throw this.failed(id, reason, e, `stopping sandbox ${id} failed: ${reason}`);
      }
      this.store.update(id, { state: 'stopped', stateReason: undefined, initPid: undefined, expiresAt: undefined });
      this.store.addEvent(id, 'stopped', 'sandbox stopped');
      return this.get(id);
    });
  }

  /** TERM every process, wait up to the grace period, then KILL; the rootfs stays for a later start. */
  private async halt(rec: SandboxRecord, graceMs: number): Promise<void> {
    const rt = this.runtimeFor(rec.runtime);
    this.unschedule(rec.id);
    if (rec.state === 'paused') await rt.resume(rec.id).catch(() => {});
    // TERM the sandbox's own processes first and give them the grace period, as Docker does with a
    // container's main process. Signalling everything at once would also hit the init (tini), which
    // exits at once and takes the pid namespace down with SIGKILL before any TERM handler has run.
    const deadline = Date.now() + graceMs;
    const procs = this.live.get(rec.id)?.processes;
    const running = () => procs?.list().filter((p) => p.running) ?? [];
    await Promise.all(running().map((p) => procs!.signal(p.pid, 'SIGTERM').catch(() => {})));
    while (Date.now() < deadline && running().length) await sleep(20);
    await rt.killAll(rec.id, 'SIGTERM').catch(() => {});
    while (Date.now() < deadline && rec.initPid && pidAlive(rec.initPid)) await sleep(20);
    if (rec.initPid && pidAlive(rec.initPid)) await rt.killAll(rec.id, 'SIGKILL').catch(() => {});
    await this.unboot(rec.id, rec.runtime);
  }

  /** Give back what a booted sandbox holds (container, live handles, network, mounts), keeping its files. */
  private async unboot(id: string, runtime: RuntimeName): Promise<void> {
    this.forget(id);
    await this.runtimeFor(runtime).delete(id, this.rootfs.dirs(id).bundle);
    await this.net?.detach(id);
    await this.rootfs.unmount(id);
  }

  async pause(id: string): Promise<SandboxRecord> {
    return this.lock.run(id, async () => {
      const rec = this.get(id);
      assertAllowed(id, rec.state, 'pause');
      await this.runtimeFor(rec.runtime).pause(id);
      this.store.update(id, { state: 'paused' });
      this.store.addEvent(id, 'paused', 'sandbox paused');
      return this.get(id);
    });
  }

  async resume(id: string): Promise<SandboxRecord> {
    return this.lock.run(id, async () => {
      const rec = this.get(id);
      assertAllowed(id, rec.state, 'resume');
      await this.runtimeFor(rec.runtime).resume(id);
      this.store.update(id, { state: 'running' });
      this.store.addEvent(id, 'resumed', 'sandbox resumed');
      return this.get(id);
    });
  }

  /**
   * Remove a sandbox. Without force only a stopped or failed one; with force whatever its state.
   * When removal fails midway the record stays, in state error with the reason, and a retry finishes it.
   */
  async remove(id: string, force = false): Promise<void> {
    return this.lock.run(id, async () => {
      const rec = this.get(id);
      if (!force && (rec.state === 'running' || rec.state === 'paused')) {
        throw errors.wrongState(id, rec.state, 'remove', 'Stop it first, or remove with force (cordon rm -f).');
      }
      try {
        await this.teardown(id, rec);
      } catch (e) {
        const reason = `removal failed: ${(e as Error).message}; retry with cordon rm -f ${id}`;
        // expiresAt stays: an expired sandbox whose removal failed is retried (expiry, and after a restart).
        throw this.failed(id, reason, e, `removing sandbox ${id} failed; it stays in state error until a retry succeeds: ${reason}`, true);
      }
      this.store.delete(id);
    });
  }

  /** Drop the sandbox's timer and in-memory handles. */
  private forget(id: string): void {
    this.unschedule(id);
    this.live.get(id)?.close();
    this.live.delete(id);
  }

  /** Record an operation that failed midway: state error with the reason, and an event. */
  private failed(id: string, reason: string, cause: unknown, message: string, keepExpiry = false): CordonError {
    this.store.update(id, { state: 'error', stateReason: reason, initPid: undefined, ...(keepExpiry ? {} : { expiresAt: undefined }) });
    this.store.addEvent(id, 'error', reason);
    return new CordonError(cause instanceof CordonError ? cause.code : 'internal', message, { sandbox_id: id });
  }

  /** Undo everything a sandbox holds: processes, container, cgroups, mounts, files. */
  private async teardown(id: string, rec?: SandboxRecord): Promise<void> {
    this.forget(id);
    const runtime = rec?.runtime ?? this.store.get(id)?.runtime;
    if (runtime) {
      const rt = this.runtimeFor(runtime);
      if (rec?.state === 'paused') await rt.resume(id).catch(() => {});
      await rt.delete(id, this.rootfs.dirs(id).bundle);
    }
    await this.net?.detach(id);
    await this.rootfs.destroy(id);
  }

  /** Set (or clear, with 0) the time left before the sandbox is removed; under the lock, so a stop or
   *  remove in flight never has its timer re-armed behind its back. */
  async setTimeout(id: string, timeoutMs: number): Promise<SandboxRecord> {
    if (timeoutMs > this.cfg.maxTimeoutMs) throw errors.invalid('timeout', `at most ${this.cfg.maxTimeoutMs / 1000}s`);
    return this.lock.run(id, async () => {
      const rec = this.get(id);
      assertAllowed(id, rec.state, 'timeout');
      const expiresAt = timeoutMs > 0 ? Date.now() + timeoutMs : undefined;
      this.store.update(id, { expiresAt, spec: { ...rec.spec, timeoutMs } });
      if (rec.state === 'running' || rec.state === 'paused') this.schedule(id, expiresAt);
      return this.get(id);
    });
  }

  /** (Re)arm the sandbox's expiry timer (also used after a daemon restart). */
  schedule(id: string, expiresAt: number | undefined): void {
    this.expiry.schedule(id, expiresAt);
  }

  private unschedule(id: string): void {
    this.expiry.cancel(id);
  }

  async setMemoryLimit(id: string, bytes: number): Promise<SandboxRecord> {
    return this.lock.run(id, async () => {
      const rec = this.get(id);
      assertAllowed(id, rec.state, 'update');
      await this.runtimeFor(rec.runtime).setMemoryLimit(id, bytes).catch((e: Error) => {
        throw new CordonError('invalid_argument', `memory: the kernel refused ${bytes} bytes (${e.message}); it may be below what the sandbox uses now`);
      });
      this.store.update(id, { spec: { ...rec.spec, memoryBytes: bytes } });
      this.store.addEvent(id, 'updated', `memory limit set to ${bytes} bytes`);
      return this.get(id);
    });
  }

  async imageConfig(id: string): Promise<ImageConfig> {
    try {
      return JSON.parse(await readFile(join(this.rootfs.dirs(id).root, 'image-config.json'), 'utf8'));
    } catch {
      return { env: [] };
    }
  }

  /** Called by the supervisor when a running sandbox's init is gone. */
  async markDead(id: string, reason: string): Promise<void> {
    await this.lock.run(id, () => this.markDeadLocked(id, reason));
  }

  /** markDead for a caller that already holds the sandbox's lock (through exclusive). */
  async markDeadLocked(id: string, reason: string): Promise<void> {
    const rec = this.store.get(id);
    if (!rec || (rec.state !== 'running' && rec.state !== 'paused')) return;
    this.forget(id);
    await this.runtimeFor(rec.runtime).delete(id, this.rootfs.dirs(id).bundle).catch(() => {});
    await this.net?.detach(id).catch(() => {});
    await this.rootfs.unmount(id).catch(() => {});
    this.store.update(id, { state: 'error', stateReason: reason, initPid: undefined, expiresAt: undefined });
    this.store.addEvent(id, 'died', reason);
  }
}
