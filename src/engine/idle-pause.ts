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

/**
 * `serve --idle-pause`: a running sandbox with no activity for `idleMs` is paused (to disk where the
 * runtime checkpoints memory, else frozen), and the next call for it resumes it before it is served,
 * so callers see only latency. Activity is a call that works inside the sandbox (exec, processes,
 * files, E2B envd, E2B port routing), output of a process started through the API, and a client
 * following a running process. Reading a sandbox from outside (inspect, list, stats, events, metrics)
 * is not activity: watching a sandbox must not keep it awake. Sandboxes created with
 * `idle_pause: false` are never paused by this. Which sandboxes it paused is known to this daemon
 * only: after a restart they stay paused until resumed (or until autoResume traffic wakes them).
 */
export class IdlePause {
  private readonly lastActive = new Map<string, number>();
  /** Calls being served per sandbox: a sandbox is never paused under one. */
  private readonly inflight = new Map<string, number>();
  /** Sandboxes this paused (value: the pause, settled once it is done): the next call resumes them. */
  private readonly asleep = new Map<string, Promise<unknown>>();
  private readonly waking = new Map<string, Promise<void>>();
  private timer?: NodeJS.Timeout;
  private sweeping = false;

  constructor(
    private readonly mgr: SandboxManager,
    readonly idleMs: number,
  ) {}

  start(): void {
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
        if (this.asleep.get(id) === pausing) this.asleep.delete(id);
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
          if (this.waking.has(rec.id)) continue;
          // Resumed by someone else (cordon resume, E2B connect): a later explicit pause is not ours to undo.
          this.asleep.delete(rec.id);
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
      // A sandbox that was not running (paused, stopped) starts a fresh idle clock when it runs again.
      for (const id of this.lastActive.keys()) if (!running.has(id) && !this.inflight.has(id)) this.lastActive.delete(id);
      for (const id of this.asleep.keys()) if (!this.mgr.store.get(id)) this.asleep.delete(id);
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
      await this.mgr.pauses.pause(id);
      this.mgr.store.addEvent(id, 'idle-pause', `no activity for ${Math.round(idleFor / 1000)} s (--idle-pause ${Math.round(this.idleMs / 1000)} s): paused in ${Date.now() - started} ms; the next call resumes it`, {
        ms: Date.now() - started,
        idleMs: idleFor,
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
}
