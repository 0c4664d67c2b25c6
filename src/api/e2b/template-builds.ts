// E2B template builds as the SDK sees them: requested (waiting), triggered (building), then ready or
// error, with their log entries paged by offset. The build itself is cordon's Dockerfile builder run
// on the translated steps; the records are the engine's (BuildRecords, kept across restarts).
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BuildLogLevel, BuildRecord } from '../../engine/templates/build-records.js';
import type { BuildEvent } from '../../engine/templates/step-sandbox.js';
import { CordonError } from '../../errors/registry.js';
import { OUTSIDE_DOCKERFILE } from '../../image/template-build/context.js';
import { removeTree } from '../../image/template-build/layer-dirs.js';
import type { TemplateDeps } from '../routes/templates.js';
import type { E2bTemplateFiles } from './template-files.js';
import { translateBuild, type BuildStart, type TranslatedBuild } from './template-steps.js';

/** What E2B calls the "default" tag is the template's plain name in cordon; other tags are "name:tag". */
export function cordonName(name: string, tag: string): string {
  return tag === 'default' ? name : `${name}:${tag}`;
}

export class E2bBuilds {
  constructor(
    private readonly t: TemplateDeps,
    private readonly files: E2bTemplateFiles,
  ) {}

  /** A new build of `name` with `tags` (POST /v3/templates); it waits for its files and its trigger. */
  request(name: string, tags: string[], cpuCount?: number, memoryMB?: number): BuildRecord {
    return this.t.builds.request({ templateID: name, targets: tags.map((tag) => cordonName(name, tag)), tags, cpuCount, memoryMB });
  }

  /** Whether any build was requested for this template id (uploads are accepted for it). */
  known(templateID: string): boolean {
    return this.t.builds.known(templateID);
  }

  get(templateID: string, buildID: string): BuildRecord {
    const b = this.t.builds.get(buildID);
    if (!b || b.templateID !== templateID) throw new CordonError('not_found', `build ${buildID} of template ${templateID} not found; request a build with POST /v3/templates (the daemon keeps the newest ${this.t.builds.limits.maxBuilds})`);
    return b;
  }

  /**
   * Check the steps (a bad one is a 400 and the build stays waiting), then build in the background.
   * `resolveTemplate` turns fromTemplate into a cordon template name (or throws).
   */
  trigger(b: BuildRecord, body: BuildStart, resolveTemplate: (name: string) => string): void {
    if (b.status !== 'waiting') throw new CordonError('invalid_state', `build ${b.id} was started already; request a new build with POST /v3/templates`);
    const tr = translateBuild(body, resolveTemplate, randomBytes(8).toString('hex'));
    void this.run(this.t.builds.start(b.id), tr);
  }

  /** One page of a build's status, as GET /templates/{id}/builds/{buildID}/status answers it. */
  status(templateID: string, buildID: string, offset: number, limit: number, level?: BuildLogLevel) {
    const b = this.get(templateID, buildID);
    return {
      templateID: b.templateID,
      buildID: b.id,
      status: b.status,
      // Pending entries are written first, so a build that reads ready or error pages its whole log.
      logEntries: this.t.builds.page(b.id, offset, limit, level),
      logs: [] as string[],
      ...(b.reason ? { reason: b.reason } : {}),
    };
  }

  private async run(b: BuildRecord, tr: TranslatedBuild): Promise<void> {
    const records = this.t.builds;
    const log = (level: BuildLogLevel, message: string, step?: string, always = false) => records.log(b.id, level, message, step, always);
    const contextDir = join(this.t.service.layers.tmpDir, `e2b-context-${b.id}`);
    let e2bStep = 0;
    let finalizing = false;
    const stepName = () => (finalizing ? 'finalize' : e2bStep === 0 ? 'base' : String(e2bStep));
    const lastStepOf = Math.max(...tr.stepOf.keys());
    try {
      await mkdir(contextDir, { mode: 0o700 });
      await this.files.copyInto(tr.hashes, contextDir);
      // The build id as a label: every tag of the build reports it, across restarts.
      await writeFile(join(contextDir, OUTSIDE_DOCKERFILE), `${tr.dockerfile}LABEL e2b.build_id=${b.id}\n`, { mode: 0o600 });
      log('info', `Building template ${b.targets[0]} (build ${b.id})`);
      const onEvent = (ev: BuildEvent) => {
        switch (ev.type) {
          case 'step':
            if (tr.stepOf.has(ev.step)) e2bStep = tr.stepOf.get(ev.step)!;
            if (ev.step > lastStepOf) return;
            log('info', `[${stepName()}] ${ev.instruction}`, stepName());
            return;
          case 'cached':
            log('info', `[${stepName()}] cached`, stepName());
            return;
          case 'log':
            for (const line of ev.data.split('\n')) if (line.trim()) log('info', line.replace(/\r$/, ''), stepName());
            return;
          case 'status':
            if (/^starting /.test(ev.message)) finalizing = true;
            log('info', ev.message, stepName());
            return;
          default:
            log('debug', JSON.stringify(ev), stepName());
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
          homeWorkdir: tr.homeWorkdir,
        },
        { event: onEvent, backlog: () => 0, onDrain: (cb) => cb() },
      );
      for (const other of b.targets.slice(1)) this.t.service.alias(b.targets[0], other);
      this.noteDropped(b.id);
      log('info', `Template ${b.templateID} is ready (tags: ${b.tags.join(', ')})`, undefined, true);
      records.finish(b.id, 'ready');
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      const step = stepName();
      this.noteDropped(b.id);
      log('error', message, step, true);
      records.finish(b.id, 'error', { message, step });
    } finally {
      await removeTree(contextDir).catch(() => {});
    }
  }

  private noteDropped(id: string): void {
    const dropped = this.t.builds.get(id)?.dropped;
    const { maxLogEntries, maxLogBytes } = this.t.builds.limits;
    if (dropped) this.t.builds.log(id, 'warn', `${dropped} log lines were left out (a build keeps at most ${maxLogEntries} lines, ${maxLogBytes} bytes)`, undefined, true);
  }
}
