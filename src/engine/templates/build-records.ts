import { randomUUID } from 'node:crypto';
import { CordonError } from '../../errors/registry.js';
import type { BuildLogEntry, BuildLogLevel, BuildRecord, BuildStatus, TemplateBuildStore } from '../../store/template-builds.js';

export type { BuildLogEntry, BuildLogLevel, BuildRecord, BuildStatus } from '../../store/template-builds.js';

// Template build records (E2B's buildInBackground + getBuildStatus) kept in SQLite, so a client polling
// across a daemon restart still finds its build: a finished one with its whole log, one that was running
// as an error saying to build again. Log entries are written in batches (a step can print thousands).

export interface BuildLimits {
  /** Builds kept; past it the oldest not running go. */
  maxBuilds: number;
  /** Per build: entries and message bytes kept (later lines are counted, not kept). */
  maxLogEntries: number;
  maxLogBytes: number;
  /** Log bytes of all builds together; past it the oldest finished builds go. */
  maxTotalLogBytes: number;
  maxMessage: number;
  /** A requested build never triggered is forgotten after this long. */
  waitingTtlMs: number;
}

export const BUILD_LIMITS: BuildLimits = {
  maxBuilds: 64,
  maxLogEntries: 20_000,
  maxLogBytes: 2 * 1024 * 1024,
  maxTotalLogBytes: 32 * 1024 * 1024,
  maxMessage: 8192,
  waitingTtlMs: 3600_000,
};

/** Pending entries are written after this long, or at once past FLUSH_ENTRIES. */
const FLUSH_MS = 200;
const FLUSH_ENTRIES = 1000;
/** A failed build's reason carries this many of its failing step's last entries. */
const REASON_ENTRIES = 50;

export interface BuildRequestInput {
  templateID: string;
  targets: string[];
  tags: string[];
  cpuCount?: number;
  memoryMB?: number;
}

export class BuildRecords {
  /** Builds running in this daemon, with the entries not written yet. */
  private readonly running = new Map<string, { rec: BuildRecord; pending: BuildLogEntry[] }>();
  private timer?: NodeJS.Timeout;
  /** After close (the database is going): builds still winding down record nothing more. */
  private closed = false;

  constructor(
    private readonly store: TemplateBuildStore,
    readonly limits: BuildLimits = BUILD_LIMITS,
  ) {}

  /** At start: a build that was running when the daemon stopped can never finish; it reads as failed. */
  recoverInterrupted(): number {
    const stale = this.store.withStatus('building');
    for (const rec of stale) {
      const message = `the daemon restarted while this build was running${rec.step ? ` (at step ${rec.step})` : ''}; nothing of it was kept, start the build again`;
      const entry: BuildLogEntry = { timestamp: new Date().toISOString(), level: 'error', message, ...(rec.step !== undefined ? { step: rec.step } : {}) };
      const logEntries = rec.step !== undefined ? this.store.stepTail(rec.id, rec.step, REASON_ENTRIES - 1) : [];
      const done: BuildRecord = { ...rec, status: 'error', reason: { message, step: rec.step, logEntries: [...logEntries, entry] }, logCount: rec.logCount + 1, logBytes: rec.logBytes + message.length, finishedAt: Date.now() };
      this.store.append(done, rec.logCount, [entry]);
    }
    this.prune();
    return stale.length;
  }

  /** A new build (waiting for its trigger); refused while another build of one of its targets runs. */
  request(input: BuildRequestInput): BuildRecord {
    for (const { rec } of this.running.values()) {
      if (rec.targets.some((x) => input.targets.includes(x))) throw new CordonError('invalid_state', `template ${input.templateID} is being built already (build ${rec.id}); wait for it to end`, { template: input.templateID });
    }
    const rec: BuildRecord = { id: randomUUID(), ...input, status: 'waiting', logCount: 0, logBytes: 0, dropped: 0, createdAt: Date.now() };
    this.store.put(rec);
    this.prune();
    return rec;
  }

  get(id: string): BuildRecord | undefined {
    const r = this.running.get(id);
    return r ? { ...r.rec } : this.store.get(id);
  }

  /** Whether any build was requested for this template id. */
  known(templateID: string): boolean {
    return this.store.hasTemplate(templateID);
  }

  /** A waiting build starts running in this daemon. */
  start(id: string): BuildRecord {
    const rec = this.get(id);
    if (!rec) throw new CordonError('not_found', `build ${id} not found`);
    if (rec.status !== 'waiting') throw new CordonError('invalid_state', `build ${id} was started already; request a new build`);
    rec.status = 'building';
    this.store.put(rec);
    this.running.set(id, { rec, pending: [] });
    return { ...rec };
  }

  /** Add a log line to a running build; past its limits it is counted as dropped unless `always`. */
  log(id: string, level: BuildLogLevel, message: string, step?: string, always = false): void {
    const r = this.running.get(id);
    if (!r || this.closed) return;
    const text = message.slice(0, this.limits.maxMessage);
    if (!always && (r.rec.logCount >= this.limits.maxLogEntries || r.rec.logBytes + text.length > this.limits.maxLogBytes)) {
      r.rec.dropped++;
      return;
    }
    r.rec.logCount++;
    r.rec.logBytes += text.length;
    if (step !== undefined) r.rec.step = step;
    r.pending.push({ timestamp: new Date().toISOString(), level, message: text, ...(step !== undefined ? { step } : {}) });
    if (r.pending.length >= FLUSH_ENTRIES) this.flush(id);
    else this.timer ??= setTimeout(() => this.flushAll(), FLUSH_MS).unref();
  }

  /** A running build ended; a failure's reason carries the last entries of the step that failed. */
  finish(id: string, status: Extract<BuildStatus, 'ready' | 'error'>, failure?: { message: string; step?: string }): void {
    const r = this.running.get(id);
    if (!r || this.closed) return;
    this.flush(id);
    r.rec.status = status;
    r.rec.finishedAt = Date.now();
    if (failure) r.rec.reason = { ...failure, logEntries: failure.step !== undefined ? this.store.stepTail(id, failure.step, REASON_ENTRIES) : [] };
    this.store.put(r.rec);
    this.running.delete(id);
    this.prune();
  }

  /** Log entries from `offset`, counted among those at `level` or above when given. */
  page(id: string, offset: number, limit: number, level?: BuildLogLevel): BuildLogEntry[] {
    this.flush(id);
    const order: BuildLogLevel[] = ['debug', 'info', 'warn', 'error'];
    return this.store.logs(id, offset, limit, level ? order.slice(order.indexOf(level)) : undefined);
  }

  /** At shutdown: write what is pending; a build still running is marked failed by the next start. */
  close(): void {
    this.flushAll();
    this.closed = true;
  }

  /** Write every pending entry (on the timer, and at close). */
  flushAll(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const id of this.running.keys()) this.flush(id);
  }

  private flush(id: string): void {
    const r = this.running.get(id);
    if (!r || !r.pending.length || this.closed) return;
    const entries = r.pending.splice(0);
    this.store.append(r.rec, r.rec.logCount - entries.length, entries);
  }

  /** Forget long-waiting builds, then the oldest past the count and total log size; never a running one. */
  private prune(): void {
    const now = Date.now();
    const summaries = this.store.summaries();
    const all = summaries.filter((s) => !this.running.has(s.id));
    const doomed = new Set(all.filter((s) => s.status === 'waiting' && now - s.createdAt > this.limits.waitingTtlMs).map((s) => s.id));
    let count = summaries.length - doomed.size;
    let bytes = all.reduce((n, s) => n + s.logBytes, 0) + [...this.running.values()].reduce((n, r) => n + r.rec.logBytes, 0);
    for (const s of all) {
      if (doomed.has(s.id) || !(count > this.limits.maxBuilds || (bytes > this.limits.maxTotalLogBytes && s.logBytes > 0))) continue;
      doomed.add(s.id);
      count--;
      bytes -= s.logBytes;
    }
    if (doomed.size) this.store.delete([...doomed]);
  }
}
