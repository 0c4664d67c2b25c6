import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DaemonConfig, RuntimeName } from '../config.js';
import { CordonError, errors } from '../errors/registry.js';
import type { SandboxStore } from '../store/sandboxes.js';
import { NO_TELEMETRY, timed, type Operation, type Telemetry } from '../telemetry/telemetry.js';
import type { ContainerExit, Runtime, RuntimeState } from '../runtime/types.js';
import type { HelperSet, HelperSets } from './helper-sets.js';
import { Admission } from './admission.js';
import { agentSocketDir } from './agent/agent-setup.js';
import type { NetworkDriver, RootfsDriver } from './drivers.js';
import { ExpiryTimers } from './expiry.js';
import { KeyedLock } from './keyed-lock.js';
import { SandboxNetwork } from './sandbox-network.js';
import { LiveSandbox } from './live-sandbox.js';
import { MetricsHistory } from './metrics-history.js';
import { ContainerBoot } from './sandbox-boot.js';
import { SandboxCreation, type CreateInput, type TemplateFastPaths } from './sandbox-create.js';
import { SandboxPauses } from './sandbox-pause.js';
import { IdlePause } from './idle-pause.js';
import { POOL_LABEL } from './pool-label.js';
import { SandboxTeardown } from './sandbox-teardown.js';
import type { SandboxStorage } from './sandbox-storage.js';
import { SandboxS3 } from './sandbox-s3.js';
import type { S3CredentialStore } from '../s3/credentials.js';
import type { S3fsMounts } from '../s3/s3fs-mounts.js';
import type { RootfsResolver } from './sources.js';
import { SnapshotStore } from '../store/snapshots.js';
import { Forks } from './fork.js';
import { Snapshots, type SnapshotRecord } from './snapshots.js';
import { ACTIVE_STATES, assertAllowed, hasContainer } from './state-machine.js';
import type { ImageConfig, SandboxRecord, SandboxState } from './types.js';

export type { CreateInput } from './sandbox-create.js';

export interface ListFilter {
  state?: SandboxState[];
  labels?: Record<string, string>;
  /** Include warm-pool members (started, unclaimed sandboxes of a template); users never see them. */
  includePool?: boolean;
}

export { POOL_LABEL } from './pool-label.js';

export type { Helpers } from './helper-sets.js';

/** What the manager is built from: the runtimes, and the drivers for the sandbox's files and network. */
export interface Drivers {
  rootfs: RootfsDriver;
  /** Absent when the daemon has no network capability. */
  net?: NetworkDriver;
  /** Named volumes and host mounts; absent in daemons built without them. */
  storage?: SandboxStorage;
  /** S3 sync: registered credentials, where the sync manifests live, the s3fs mounts. Absent without S3 support. */
  s3?: { credentials: S3CredentialStore; stateDir: string; mounts: S3fsMounts };
}

/**
 * Sandbox lifecycle: create, start, stop, pause, resume, remove, timeouts. It owns the state machine
 * and keeps the store, the runtime, the rootfs and the network in agreement, undoing partial work on
 * failure. Creation, the container's boot and halt, and teardown live in their own modules.
 */
export class SandboxManager {
  readonly live = new Map<string, LiveSandbox>();
  // Every operation on a sandbox first waits for the teardown a pause to disk left running in the background.
  private readonly lock = new KeyedLock(undefined, (id) => this.pauses.settled(id));
  private readonly expiry: ExpiryTimers;
  /** What a create must pass first: a create slot, host memory and CPU pressure, the sandbox cap. */
  readonly admission: Admission;
  readonly rootfs: RootfsDriver;
  readonly net?: NetworkDriver;
  readonly storage?: SandboxStorage;
  /** S3 syncs of sandboxes (hooks and on-demand transfers); absent without S3 support. */
  readonly s3?: SandboxS3;
  /** Network rules and port forwards of existing sandboxes. */
  readonly network = new SandboxNetwork(this);
  /** Resource samples of running sandboxes over time (started by the daemon). */
  readonly metrics = new MetricsHistory(this);
  readonly boot = new ContainerBoot(this);
  readonly teardown = new SandboxTeardown(this);
  /** Pause to disk (runsc) or in memory (crun, runc), and resume. */
  readonly pauses = new SandboxPauses(this);
  private readonly creation = new SandboxCreation(this);
  /** Snapshots of running sandboxes, and sandboxes made from them. */
  readonly snapshots: Snapshots;
  readonly forks = new Forks(this);
  /** Where the engine's warnings go (the daemon's log; set by the daemon). */
  warn?: (msg: string) => void;
  /** serve --idle-pause (absent when off): pauses idle sandboxes, resumes them on the next call. */
  idle?: IdlePause;
  /** Warm pools and memory snapshots of built templates (set by the daemon when it has templates). */
  templateFast?: TemplateFastPaths;
  /** Called when a running sandbox's container ends without the engine asking (set by the supervisor). */
  onExit?: (id: string, exit: ContainerExit, live: LiveSandbox) => void;

  constructor(
    readonly cfg: DaemonConfig,
    readonly store: SandboxStore,
    readonly runtimes: Map<RuntimeName, Runtime>,
    drivers: Drivers,
    readonly sources: RootfsResolver,
    /** The programs new sandboxes get (copies in the data directory); a restore binds the set it recorded (helperSets). */
    readonly helpers: HelperSet,
    readonly helperSets: HelperSets,
    /** Where operation latencies and admission refusals are counted (the daemon's metrics). */
    readonly telemetry: Telemetry = NO_TELEMETRY,
  ) {
    this.rootfs = drivers.rootfs;
    this.net = drivers.net;
    this.storage = drivers.storage;
    if (drivers.s3) this.s3 = new SandboxS3(this, drivers.s3.credentials, drivers.s3.stateDir, drivers.s3.mounts);
    this.admission = new Admission(cfg, {}, telemetry);
    this.snapshots = new Snapshots(this, new SnapshotStore(store.db));
    this.expiry = new ExpiryTimers(store, (id) => this.expire(id));
    if (cfg.idlePauseMs > 0) this.idle = new IdlePause(this, cfg.idlePauseMs, cfg.idlePauseDiskMs);
  }

  /** Host directory of a sandbox's agent socket (bind-mounted into it). */
  agentSocketDir(id: string): string {
    return agentSocketDir(this.rootfs.dirs(id).root, this.cfg.dataDir, id);
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
        (filter.includePool || r.labels[POOL_LABEL] === undefined) &&
        (!filter.state?.length || filter.state.includes(r.state)) &&
        Object.entries(filter.labels ?? {}).every(([k, v]) => r.labels[k] === v),
    );
  }

  /** Sandboxes that count against --max-sandboxes. */
  countActive(): number {
    return this.store.countIn(ACTIVE_STATES);
  }

  /** The running sandbox's live handles (processes, files); 409 when it is not running. */
  running(id: string, action: 'exec' | 'files' | 'stats' | 'update' = 'exec'): LiveSandbox {
    const rec = this.get(id);
    assertAllowed(id, rec.state, action);
    // Paused to disk, its container is gone (no runtime state); frozen in memory, it keeps both.
    if (rec.state === 'paused' && !rec.runtimeState) {
      throw errors.wrongState(id, rec.state, action, 'It is paused to disk: nothing of it runs and it holds no memory. Resume it first.');
    }
    const live = this.live.get(id);
    if (!live) throw errors.wrongState(id, rec.state, action, 'The daemon lost track of it; stop and start it again.');
    return live;
  }

  create(input: CreateInput, progress?: (line: string) => void): Promise<SandboxRecord> {
    const runtime = input.runtime ?? this.cfg.defaultRuntime;
    // An unknown runtime name is refused inside; it must not become a label value.
    return timed(this.telemetry, 'create', this.runtimes.has(runtime) ? runtime : 'unknown', () => this.creation.create(input, progress));
  }

  /** Time an operation on an existing sandbox, labelled with its runtime. */
  private timed<T>(op: Operation, id: string, fn: () => Promise<T>): Promise<T> {
    return timed(this.telemetry, op, this.store.get(id)?.runtime ?? 'unknown', fn);
  }

  /** Sandboxes per state and runtime (read by the metrics at scrape time); zeros for this daemon's runtimes. */
  countByStateAndRuntime(): { state: string; runtime: string; count: number }[] {
    const counts = new Map<string, { state: string; runtime: string; count: number }>();
    for (const runtime of this.runtimes.keys()) {
      for (const state of ['running', 'paused', 'stopped', 'error'] as const) counts.set(`${state}\0${runtime}`, { state, runtime, count: 0 });
    }
    for (const r of this.store.list()) {
      const key = `${r.state}\0${r.runtime}`;
      const c = counts.get(key);
      if (c) c.count++;
      else counts.set(key, { state: r.state, runtime: r.runtime, count: 1 });
    }
    return [...counts.values()];
  }

  /** A new sandbox from a snapshot already resolved (forks pass theirs). */
  createFromSnapshot(snap: SnapshotRecord, input: CreateInput): Promise<SandboxRecord> {
    return this.creation.fromSnapshot(snap, input);
  }

  /** Give a running sandbox its in-memory handles (also used after a daemon restart). */
  attach(id: string, rt: Runtime, image: ImageConfig, state: RuntimeState | undefined): LiveSandbox {
    return this.boot.attach(id, rt, image, state);
  }

  async start(id: string): Promise<SandboxRecord> {
    return this.timed('start', id, () => this.startLocked(id));
  }

  private startLocked(id: string): Promise<SandboxRecord> {
    return this.lock.run(id, async () => {
      const rec = this.get(id);
      assertAllowed(id, rec.state, 'start');
      const image = await this.imageConfig(id);
      try {
        await this.boot.boot(rec, image);
      } catch (e) {
        // Give back what boot took (container, network, mounts); the sandbox's files stay for a retry.
        const undo = await this.boot.unboot(id, rec.runtime).then(
          () => '',
          (ue: Error) => `; cleaning up failed too: ${ue.message}`,
        );
        const reason = `start failed: ${(e as Error).message}${undo}`;
        throw this.fail(id, reason, e, `starting sandbox ${id} failed: ${(e as Error).message}${undo}`);
      }
      this.store.addEvent(id, 'started', 'sandbox started');
      // Hooks-mode syncs pull what changed in the bucket; a failure is in the events, the sandbox runs on its own files.
      await this.s3?.pullHooks(this.get(id), 'start').catch((e: Error) => this.store.addEvent(id, 'error', `S3 pull at start failed: ${e.message}`));
      return this.get(id);
    });
  }

  async stop(id: string, graceMs = 10_000): Promise<SandboxRecord> {
    return this.timed('stop', id, () => this.stopLocked(id, graceMs));
  }

  private stopLocked(id: string, graceMs: number): Promise<SandboxRecord> {
    return this.lock.run(id, async () => {
      const rec = this.get(id);
      assertAllowed(id, rec.state, 'stop');
      // Hooks-mode syncs push first; what fails stays in the stopped sandbox's files for the next push (events say so).
      await this.s3?.pushHooks(rec, 'stop').catch((e: Error) => this.store.addEvent(id, 'error', `S3 push at stop failed: ${e.message}; the files stay in the sandbox for the next push`));
      try {
        if (rec.state === 'paused' && (await this.pauses.onDisk(id))) await this.pauses.stopFromDisk(id);
        else await this.boot.halt(rec, graceMs);
        await this.pauses.drop(id);
      } catch (e) {
        this.forget(id);
        const reason = `stop failed: ${(e as Error).message}; remove it with cordon rm -f ${id}`;
        throw this.fail(id, reason, e, `stopping sandbox ${id} failed: ${reason}`);
      }
      this.store.update(id, { state: 'stopped', stateReason: undefined, runtimeState: undefined, expiresAt: undefined });
      this.store.addEvent(id, 'stopped', 'sandbox stopped');
      return this.get(id);
    });
  }

  pause(id: string): Promise<SandboxRecord> {
    return this.timed('pause', id, () => this.lock.run(id, () => this.pauses.pause(id)));
  }

  resume(id: string): Promise<SandboxRecord> {
    return this.timed('resume', id, () => this.lock.run(id, () => this.pauses.resume(id)));
  }

  /**
   * The timeout ran out: remove the sandbox, or (spec.onTimeout) pause or stop it. A pause that
   * fails (a sandbox holding TCP connections) ends in removal, as a timeout must end something.
   */
  private async expire(id: string): Promise<void> {
    const rec = this.store.get(id);
    const action = rec?.spec.onTimeout ?? 'kill';
    if (rec && rec.state === 'running' && action !== 'kill') {
      try {
        if (action === 'pause') await this.pause(id);
        else await this.stop(id);
        this.store.addEvent(id, 'timeout', `the timeout ran out; the sandbox was ${action === 'pause' ? 'paused' : 'stopped'} (on timeout: ${action})`);
        return;
      } catch (e) {
        if (this.store.get(id)?.state !== 'running') throw e;
        this.store.addEvent(id, 'timeout', `the timeout ran out and ${action} failed (${(e as Error).message}); removing it`);
      }
    }
    await this.remove(id, true);
  }

  remove(id: string, force = false): Promise<void> {
    return this.timed('remove', id, () => this.teardown.remove(id, force));
  }

  /** Drop the sandbox's timer, exit watch and in-memory handles. */
  forget(id: string): void {
    this.unschedule(id);
    this.boot.unwatch(id);
    this.live.get(id)?.close();
    this.live.delete(id);
  }

  /** Record an operation that failed midway: state error with the reason, and an event. */
  fail(id: string, reason: string, cause: unknown, message: string, keepExpiry = false): CordonError {
    this.store.update(id, { state: 'error', stateReason: reason, runtimeState: undefined, ...(keepExpiry ? {} : { expiresAt: undefined }) });
    this.store.addEvent(id, 'error', reason);
    return new CordonError(cause instanceof CordonError ? cause.code : 'internal', message, { sandbox_id: id });
  }

  /** Set (or clear, with 0) the time left before the sandbox is removed; under the lock, so a stop or
   *  remove in flight never has its timer re-armed behind its back. */
  async setTimeout(id: string, timeoutMs: number): Promise<SandboxRecord> {
    if (timeoutMs > this.cfg.maxTimeoutMs) throw errors.invalid('timeout', `at most ${this.cfg.maxTimeoutMs / 1000}s`);
    return this.lock.run(id, async () => {
      const rec = this.get(id);
      assertAllowed(id, rec.state, 'timeout');
      // The clock of a paused sandbox stands still: the new time is left for when it resumes.
      if (rec.state === 'paused') {
        await this.pauses.setRemaining(id, timeoutMs);
        this.store.update(id, { spec: { ...rec.spec, timeoutMs } });
        return this.get(id);
      }
      const expiresAt = timeoutMs > 0 ? Date.now() + timeoutMs : undefined;
      this.store.update(id, { expiresAt, spec: { ...rec.spec, timeoutMs } });
      if (hasContainer(rec.state)) this.schedule(id, expiresAt);
      return this.get(id);
    });
  }

  /** (Re)arm the sandbox's expiry timer (also used after a daemon restart). */
  schedule(id: string, expiresAt: number | undefined): void {
    this.expiry.schedule(id, expiresAt);
  }

  unschedule(id: string): void {
    this.expiry.cancel(id);
  }

  async setMemoryLimit(id: string, bytes: number): Promise<SandboxRecord> {
    return this.lock.run(id, async () => {
      const rec = this.get(id);
      assertAllowed(id, rec.state, 'update');
      const rt = this.runtimeFor(rec.runtime);
      if (!rt.capabilities.liveMemoryUpdate) {
        throw new CordonError('not_implemented', `memory: runtime ${rt.name} cannot change the limit of a running sandbox; stop it, then start it with the new limit`, { capability: 'liveMemoryUpdate' });
      }
      await rt.setMemoryLimit(id, bytes).catch((e: Error) => {
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

  /** Called by the supervisor when a running sandbox's container ended on its own. */
  markDead(id: string, reason: string, live?: LiveSandbox): Promise<void> {
    return this.teardown.markDead(id, reason, live);
  }

  /** markDead for a caller that already holds the sandbox's lock (through exclusive). */
  markDeadLocked(id: string, reason: string): Promise<void> {
    return this.teardown.markDeadLocked(id, reason);
  }

  /** The daemon is closing: stop the exit watches (the sandboxes keep running for the next start). */
  close(): void {
    this.boot.unwatchAll();
  }

  /** The helper sets sandboxes and snapshots record (a restore binds them again): they must stay. */
  async recordedHelperSets(): Promise<string[]> {
    const ids = [...(await Promise.all(this.store.list().map((r) => this.boot.helperSetOf(r.id)))), ...this.snapshots.store.list({ includeAuto: true }).map((s) => s.helpers)];
    return ids.filter((id): id is string => !!id);
  }

  /**
   * The daemon's last step before its store closes: the sandboxes run on (a restarted daemon
   * reattaches them), their agent connections and ping timers end here (a ping would read the closed store).
   */
  detachAll(): void {
    for (const live of this.live.values()) live.close('the daemon stopped while the command ran; the process keeps running in the sandbox');
    this.live.clear();
  }
}
