// E2B template builds as the SDK sees them: requested (waiting), triggered (building), then ready or
// error, with their log entries paged by offset. The build itself is cordon's Dockerfile builder run
// on the translated steps; the records live in memory (a daemon restart forgets unfinished builds).
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BuildEvent } from '../../engine/templates/step-sandbox.js';
import { CordonError } from '../../errors/registry.js';
import { OUTSIDE_DOCKERFILE } from '../../image/template-build/context.js';
import { removeTree } from '../../image/template-build/layer-dirs.js';
import type { TemplateDeps } from '../routes/templates.js';
import type { E2bTemplateFiles } from './template-files.js';
import { translateBuild, type BuildStart, type TranslatedBuild } from './template-steps.js';

export type E2bBuildStatus = 'waiting' | 'building' | 'ready' | 'error';

export interface BuildLogEntry {
  timestamp: string;
  level: 'debug' | 'info' | 'warn' | 'error';
  message: string;
  step?: string;
}

export interface E2bBuild {
  buildID: string;
  /** E2B's template id: the template's name. */
  templateID: string;
  /** The cordon template names this build makes: the first is built, the others are its tags. */
  targets: string[];
  tags: string[];
  cpuCount?: number;
  memoryMB?: number;
  status: E2bBuildStatus;
  logs: BuildLogEntry[];
  dropped: number;
  logBytes: number;
  reason?: { message: string; step?: string; logEntries: BuildLogEntry[] };
  createdAt: number;
  finishedAt?: number;
}

/** Kept in memory: at most this many builds, each with at most this much log (a flooding step is cut). */
const MAX_BUILDS = 64;
const MAX_LOG_ENTRIES = 20_000;
const MAX_LOG_BYTES = 2 * 1024 * 1024;
const MAX_MESSAGE = 8192;
/** A requested build never triggered is forgotten after this long. */
const WAITING_TTL_MS = 3600_000;

/** What E2B calls the "default" tag is the template's plain name in cordon; other tags are "name:tag". */
export function cordonName(name: string, tag: string): string {
  return tag === 'default' ? name : `${name}:${tag}`;
}

export class E2bBuilds {
  private readonly builds = new Map<string, E2bBuild>();

  constructor(
    private readonly t: TemplateDeps,
    private readonly files: E2bTemplateFiles,
  ) {}

  /** A new build of `name` with `tags` (POST /v3/templates); it waits for its files and its trigger. */
  request(name: string, tags: string[], cpuCount?: number, memoryMB?: number): E2bBuild {
    const targets = tags.map((tag) => cordonName(name, tag));
    for (const b of this.builds.values()) {
      if (b.status === 'building' && b.targets.some((x) => targets.includes(x))) throw new CordonError('invalid_state', `template ${name} is being built already (build ${b.buildID}); wait for it to end`, { template: name });
    }
    const b: E2bBuild = { buildID: randomUUID(), templateID: name, targets, tags, cpuCount, memoryMB, status: 'waiting', logs: [], dropped: 0, logBytes: 0, createdAt: Date.now() };
    this.builds.set(b.buildID, b);
    this.trim();
    return b;
  }

  /** Whether any build was requested for this template id (uploads are accepted for it). */
  known(templateID: string): boolean {
    for (const b of this.builds.values()) if (b.templateID === templateID) return true;
    return false;
  }

  get(templateID: string, buildID: string): E2bBuild {
    const b = this.builds.get(buildID);
    if (!b || b.templateID !== templateID) throw new CordonError('not_found', `build ${buildID} of template ${templateID} not found; builds are kept in memory until the daemon restarts`);
    return b;
  }

  /**
   * Check the steps (a bad one is a 400 and the build stays waiting), then build in the background.
   * `resolveTemplate` turns fromTemplate into a cordon template name (or throws).
   */
  trigger(b: E2bBuild, body: BuildStart, resolveTemplate: (name: string) => string): void {
    if (b.status !== 'waiting') throw new CordonError('invalid_state', `build ${b.buildID} was started already; request a new build with POST /v3/templates`);
    const tr = translateBuild(body, resolveTemplate, randomBytes(8).toString('hex'));
    b.status = 'building';
    void this.run(b, tr);
  }

  private log(b: E2bBuild, level: BuildLogEntry['level'], message: string, step?: string, always = false): void {
    const text = message.slice(0, MAX_MESSAGE);
    if (!always && (b.logs.length >= MAX_LOG_ENTRIES || b.logBytes + text.length > MAX_LOG_BYTES)) {
      b.dropped++;
      return;
    }
    b.logBytes += text.length;
    b.logs.push({ timestamp: new Date().toISOString(), level, message: text, ...(step !== undefined ? { step } : {}) });
  }

  private async run(b: E2bBuild, tr: TranslatedBuild): Promise<void> {
    const contextDir = join(this.t.service.layers.tmpDir, `e2b-context-${b.buildID}`);
    let e2bStep = 0;
    let finalizing = false;
    const stepName = () => (finalizing ? 'finalize' : e2bStep === 0 ? 'base' : String(e2bStep));
    const lastStepOf = Math.max(...tr.stepOf.keys());
    try {
      await mkdir(contextDir, { mode: 0o700 });
      await this.files.copyInto(tr.hashes, contextDir);
      // The build id as a label: every tag of the build reports it, across restarts.
      await writeFile(join(contextDir, OUTSIDE_DOCKERFILE), `${tr.dockerfile}LABEL e2b.build_id=${b.buildID}\n`, { mode: 0o600 });
      this.log(b, 'info', `Building template ${b.targets[0]} (build ${b.buildID})`);
      const onEvent = (ev: BuildEvent) => {
        switch (ev.type) {
          case 'step':
            if (tr.stepOf.has(ev.step)) e2bStep = tr.stepOf.get(ev.step)!;
            if (ev.step > lastStepOf) return;
            this.log(b, 'info', `[${stepName()}] ${ev.instruction}`, stepName());
            return;
          case 'cached':
            this.log(b, 'info', `[${stepName()}] cached`, stepName());
            return;
          case 'log':
            for (const line of ev.data.split('\n')) if (line.trim()) this.log(b, 'info', line.replace(/\r$/, ''), stepName());
            return;
          case 'status':
            if (/^starting /.test(ev.message)) finalizing = true;
            this.log(b, 'info', ev.message, stepName());
            return;
          default:
            this.log(b, 'debug', JSON.stringify(ev), stepName());
        }
      };
      await this.t.builder.build(
        {
          name: b.targets[0],
          contextDir,
          dockerfile: OUTSIDE_DOCKERFILE,
          buildArgs: {},
          cpus: b.cpuCount,
          memoryBytes: b.memoryMB ? b.memoryMB * 1024 * 1024 : undefined,
          noCache: tr.noCache,
          startCmd: tr.startCmd,
          readyCmd: tr.readyCmd,
        },
        { event: onEvent, backlog: () => 0, onDrain: (cb) => cb() },
      );
      for (const other of b.targets.slice(1)) this.t.service.alias(b.targets[0], other);
      this.noteDropped(b);
      this.log(b, 'info', `Template ${b.templateID} is ready (tags: ${b.tags.join(', ')})`, undefined, true);
      b.status = 'ready';
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      const step = stepName();
      this.noteDropped(b);
      this.log(b, 'error', message, step, true);
      b.reason = { message, step, logEntries: b.logs.filter((l) => l.step === step).slice(-50) };
      b.status = 'error';
    } finally {
      b.finishedAt = Date.now();
      await removeTree(contextDir).catch(() => {});
    }
  }

  private noteDropped(b: E2bBuild): void {
    if (b.dropped) this.log(b, 'warn', `${b.dropped} log lines were left out (a build keeps at most ${MAX_LOG_ENTRIES} lines, ${MAX_LOG_BYTES} bytes)`, undefined, true);
  }

  /** Keep at most MAX_BUILDS: the oldest finished (or long-waiting) builds go first. */
  private trim(): void {
    const now = Date.now();
    for (const [id, b] of this.builds) if (b.status === 'waiting' && now - b.createdAt > WAITING_TTL_MS) this.builds.delete(id);
    for (const [id, b] of this.builds) {
      if (this.builds.size <= MAX_BUILDS) break;
      if (b.status !== 'building') this.builds.delete(id);
    }
  }
}

/** One page of a build's status, as GET /templates/{id}/builds/{buildID}/status answers it. */
export function buildStatusView(b: E2bBuild, offset: number, limit: number, level?: BuildLogEntry['level']) {
  const order = ['debug', 'info', 'warn', 'error'];
  const logs = level ? b.logs.filter((l) => order.indexOf(l.level) >= order.indexOf(level)) : b.logs;
  return {
    templateID: b.templateID,
    buildID: b.buildID,
    status: b.status,
    logEntries: logs.slice(offset, offset + limit),
    logs: [] as string[],
    ...(b.reason ? { reason: b.reason } : {}),
  };
}
