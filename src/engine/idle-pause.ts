import { totalmem } from 'node:os';
import { hostMemAvailable } from './admission.js';
import type { SandboxManager } from './sandbox-manager.js';
import { POOL_LABEL } from './pool-label.js';

/** How often idle sandboxes are looked for, at most (a fifth of the idle time, within these bounds). */
const SWEEP_MIN_MS = 250;
const SWEEP_MAX_MS = 5_000;
/**
 * Pauses a sweep runs at once: most of a pause to disk is waiting for the frozen sentry to exit
 * (README, bench/pause), so a few overlap well even on two cores, and one at a time falls behind
 * once calls wake sandboxes faster than one pause a second.
 */
const PAUSES_AT_ONCE = 4;
/** Frozen sandboxes moved to disk per sweep when memory runs short (each checkpoint takes a core for a while). */
const DISK_PER_SWEEP = 2;
/** Below this much available host memory, the longest-frozen sandboxes go to disk before their time. */
const LOW_MEMORY_FRACTION = 0.15;

/**
 * `serve --idle-pause`: a running sandbox with no activity for `idleMs` is frozen in memory (its whole
 * sandbox, kernel included under runsc: no CPU, a wake in milliseconds), and one frozen for a further
 * `diskMs` (or sooner when the host runs short of memory) is paused to disk where the runtime
 * checkpoints memory, so it costs disk only. The next call for it resumes it before it is served, so
 * callers see only latency. Activity is a call that works inside the sandbox (exec, processes, files,
 * snapshot, fork, E2B envd, E2B port routing), output of a process started through the API, and a
 * client following a running process. Reading a sandbox from outside (inspect, list, stats, events,
 * metrics) is not activity: watching a sandbox must not keep it awake. Sandboxes created with
 * `idle_pause: false` are never paused by this. The pause record says it was for idleness, so a
 * restarted daemon still wakes them on the next call.
 */
export class IdlePause {
  private readonly lastActive = new Map<string, number>();
  /** Calls being served per sandbox: a sandbox is never paused under one. */
  private readonly inflight = new Map<string, number>();
  /** Sandboxes this paused (value: the pause, settled once it is done): the next call resumes them. */
  private readonly asleep = new Map<string, Promise<unknown>>();
  /** When each sandbox this froze was frozen (absent once it is on disk). */
  private readonly frozenAt = new Map<string, number>();
  private readonly waking = new Map<string, Promise<void>>();
  /** Frozen sandboxes being moved to disk (thawed for a moment: not "resumed by someone else"). */
  private readonly moving = new Set<string>();
  private timer?: NodeJS.Timeout;
  private sweeping = false;

  constructor(
    private readonly mgr: SandboxManager,
    readonly idleMs: number,
    /** Frozen this long, a sandbox is paused to disk (0: only when memory runs short). */
    readonly diskMs: number,
  ) {}

  start(): void {
    void this.adoptAsleep().catch(() => {});
    const every = Math.min(SWEEP_MAX_MS, Math.max(SWEEP_MIN_MS, Math.floor(this.idleMs / 5)));
    this.timer = setInterval(() => void this.sweep().catch(() => {}), every);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Activity that is not a call (e.g. a stream that keeps going). */
  touch(id: string): void {
    this.lastActive.set(id, Date.now());
  }

  /**
   * A call for the sandbox begins: resume it first if this paused it. The sandbox is not paused
   * until the returned release is called (when the call's response is done).
   */
  async enter(id: string): Promise<() => void> {
    this.inflight.set(id, (this.inflight.get(id) ?? 0) + 1);
    this.touch(id);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const n = (this.inflight.get(id) ?? 1) - 1;
      if (n > 0) this.inflight.set(id, n);
      else this.inflight.delete(id);
      this.touch(id);
    };
    try {
      await this.wake(id);
    } catch (e) {
      release();
      throw e;
    }
    return release;
  }

  /** Whether this daemon paused the sandbox for idleness (and has not resumed it yet). */
  isAsleep(id: string): boolean {
    return this.asleep.has(id);
  }

  /** Sandboxes a previous daemon paused for idleness: this one wakes them on their next call. */
  private async adoptAsleep(): Promise<void> {
    for (const rec of this.mgr.store.list()) {
      if (rec.state !== 'paused' || this.asleep.has(rec.id)) continue;
      const pause = await this.mgr.pauses.record(rec.id).catch(() => undefined);
      if (!pause?.idle) continue;
      this.asleep.set(rec.id, Promise.resolve(true));
      if (pause.kind === 'freeze') this.frozenAt.set(rec.id, pause.pausedAt);
    }
  }

  private async wake(id: string): Promise<void> {
    const pausing = this.asleep.get(id);
    if (!pausing) return;
    let w = this.waking.get(id);
    if (!w) {
      w = (async () => {
        await pausing.catch(() => {});
        // Paused by this, unless someone resumed, stopped or removed it since: then there is nothing to do.
        if (this.mgr.store.get(id)?.state === 'paused' && this.asleep.get(id) === pausing) {
          const started = Date.now();
          await this.mgr.resume(id);
          this.mgr.store.addEvent(id, 'idle-resume', `a call woke the sandbox paused for idleness; resumed in ${Date.now() - started} ms`, { ms: Date.now() - started });
        }
        if (this.asleep.get(id) === pausing) {
          this.asleep.delete(id);
          this.frozenAt.delete(id);
        }
      })().finally(() => this.waking.delete(id));
      this.waking.set(id, w);
    }
    await w;
  }

  /** Pause the running sandboxes idle for idleMs, a few at a time (wakes do not wait for the sweep). */
  private async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      const now = Date.now();
      const running = new Set<string>();
      const idle: string[] = [];
      for (const rec of this.mgr.store.list()) {
        if (rec.state !== 'running') continue;
        running.add(rec.id);
        if (this.asleep.has(rec.id)) {
          if (this.waking.has(rec.id) || this.moving.has(rec.id)) continue;
          // Resumed by someone else (cordon resume, E2B connect): a later explicit pause is not ours to undo.
          this.asleep.delete(rec.id);
          this.frozenAt.delete(rec.id);
          this.touch(rec.id);
          continue;
        }
        // A warm-pool member is kept running so that a claim is instant; it is idle by design.
        if (rec.spec.idlePause === false || rec.labels[POOL_LABEL] !== undefined || this.inflight.has(rec.id)) continue;
        const live = this.mgr.live.get(rec.id);
        if (!live) continue;
        if (!this.lastActive.has(rec.id)) this.lastActive.set(rec.id, now); // first seen: its clock starts now
        if (now - this.lastSign(rec.id) >= this.idleMs) idle.push(rec.id);
      }
      await Promise.all(
        Array.from({ length: Math.min(PAUSES_AT_ONCE, idle.length) }, async () => {
          for (let id = idle.shift(); id; id = idle.shift()) await this.sleep(id);
        }),
      );
      await this.toDisk(now);
      // A sandbox that was not running (paused, stopped) starts a fresh idle clock when it runs again.
      for (const id of this.lastActive.keys()) if (!running.has(id) && !this.inflight.has(id)) this.lastActive.delete(id);
      for (const id of this.asleep.keys()) if (!this.mgr.store.get(id)) this.asleep.delete(id);
      for (const id of this.frozenAt.keys()) if (!this.asleep.has(id)) this.frozenAt.delete(id);
    } finally {
      this.sweeping = false;
    }
  }

  private lastSign(id: string): number {
    return Math.max(this.lastActive.get(id) ?? 0, this.mgr.live.get(id)?.processes.lastActivityAt() ?? 0);
  }

  private async sleep(id: string): Promise<void> {
    const pause = this.mgr.exclusive(id, async () => {
      // A call may have begun, or the sandbox changed state, while the lock was awaited.
      if (this.inflight.has(id) || this.mgr.store.get(id)?.state !== 'running' || Date.now() - this.lastSign(id) < this.idleMs) return false;
      const started = Date.now();
      const idleFor = started - this.lastSign(id);
      await this.mgr.pauses.pause(id, { freeze: true, idle: true });
      this.frozenAt.set(id, Date.now());
      this.mgr.store.addEvent(id, 'idle-pause', `no activity for ${Math.round(idleFor / 1000)} s (--idle-pause ${Math.round(this.idleMs / 1000)} s): frozen in memory in ${Date.now() - started} ms; the next call resumes it`, {
        ms: Date.now() - started,
        idleMs: idleFor,
        kind: 'freeze',
      });
      return true;
    });
    this.asleep.set(id, pause);
    const paused = await pause.catch((e: Error) => {
      this.mgr.store.addEvent(id, 'error', `idle pause failed: ${e.message}; it keeps running`);
      return false;
    });
    if (!paused && this.asleep.get(id) === pause) this.asleep.delete(id);
    if (!paused) this.touch(id); // a failed pause is not retried at every sweep
  }

  /**
   * Frozen sandboxes that have slept `diskMs` go to disk where the runtime checkpoints memory; when
   * the host's available memory is short, the longest-frozen go first whatever their time.
   */
  private async toDisk(now: number): Promise<void> {
    const frozen = [...this.frozenAt.entries()].filter(([id]) => !this.waking.has(id) && !this.inflight.has(id)).sort((a, b) => a[1] - b[1]);
    if (!frozen.length) return;
    const due = this.diskMs > 0 ? frozen.filter(([, at]) => now - at >= this.diskMs) : [];
    const short = (await memoryShort()) ? frozen.slice(0, DISK_PER_SWEEP) : [];
    const ids = [...new Set([...due, ...short].map(([id]) => id))].slice(0, DISK_PER_SWEEP);
    for (const id of ids) {
      const rec = this.mgr.store.get(id);
      if (rec?.state !== 'paused' || this.mgr.runtimeFor(rec.runtime).capabilities.checkpoint !== 'memory') {
        this.frozenAt.delete(id); // stays frozen: this runtime has nothing better
        continue;
      }
      await this.moveToDisk(id, now - (this.frozenAt.get(id) ?? now));
    }
  }

  private async moveToDisk(id: string, frozenFor: number): Promise<void> {
    const before = this.asleep.get(id);
    this.moving.add(id);
    this.frozenAt.delete(id);
    let move: Promise<boolean> | undefined;
    move = this.mgr.exclusive(id, async () => {
      // A call may have woken it, or someone resumed or removed it, while the lock was awaited.
      const mine = this.asleep.get(id) === move || this.asleep.get(id) === before;
      if (!mine || this.inflight.has(id) || this.mgr.store.get(id)?.state !== 'paused') return false;
      const started = Date.now();
      // A checkpoint needs the sandbox's kernel answering: thaw, then pause to disk at once.
      await this.mgr.pauses.resume(id);
      await this.mgr.pauses.pause(id, { idle: true });
      this.mgr.store.addEvent(id, 'idle-pause', `frozen for ${Math.round(frozenFor / 1000)} s: paused to disk in ${Date.now() - started} ms; its memory is freed`, { ms: Date.now() - started, frozenMs: frozenFor, kind: 'disk' });
      return true;
    });
    // A call arriving meanwhile waits for this, then resumes the sandbox from whatever it became.
    this.asleep.set(id, move);
    const moved = await move.catch((e: Error) => {
      this.mgr.store.addEvent(id, 'error', `moving the idle sandbox to disk failed: ${e.message}`);
      return false;
    });
    this.moving.delete(id);
    // The pause to disk failed after the thaw: it runs again, with a fresh idle clock.
    if (!moved && this.asleep.get(id) === move && this.mgr.store.get(id)?.state === 'running') {
      this.asleep.delete(id);
      this.touch(id);
    }
  }
}

/** Whether the host's available memory (admission's reading) is below LOW_MEMORY_FRACTION of its total. */
async function memoryShort(): Promise<boolean> {
  const avail = await hostMemAvailable().catch(() => Number.MAX_SAFE_INTEGER);
  return avail / totalmem() < LOW_MEMORY_FRACTION;
}
