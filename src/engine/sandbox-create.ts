import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RuntimeName } from '../config.js';
import { CordonError, errors } from '../errors/registry.js';
import { networkEnv } from '../net/sandbox-files.js';
import { newId } from '../util/ids.js';
import { composeCommand } from './exec-env.js';
import { startAndWaitReady } from './templates/start-ready.js';
import type { SandboxManager } from './sandbox-manager.js';
import type { SandboxRecord, SandboxSpec } from './types.js';

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

/** Creating a sandbox: validate, pass admission, prepare its rootfs, boot it; undo it all on failure. */
export class SandboxCreation {
  constructor(private readonly mgr: SandboxManager) {}

  async create(input: CreateInput, progress?: (line: string) => void): Promise<SandboxRecord> {
    const { cfg } = this.mgr;
    const runtime = input.runtime ?? cfg.defaultRuntime;
    this.mgr.runtimeFor(runtime);
    const timeoutMs = input.timeoutMs ?? cfg.defaultTimeoutMs;
    if (timeoutMs > cfg.maxTimeoutMs) throw errors.invalid('timeout', `at most ${cfg.maxTimeoutMs / 1000}s`);
    if (input.network && input.network.mode !== 'none') {
      if (!this.mgr.net) throw errors.invalid('network', 'this daemon has no network capability');
      this.mgr.net.validate(input.network);
    }
    const release = await this.mgr.admission.enter();
    try {
      return await this.createAdmitted(input, runtime, timeoutMs, progress);
    } finally {
      release();
    }
  }

  private async createAdmitted(input: CreateInput, runtime: RuntimeName, timeoutMs: number, progress?: (line: string) => void): Promise<SandboxRecord> {
    const { cfg, store, rootfs } = this.mgr;
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
      memoryBytes: input.memoryBytes ?? cfg.defaultMemoryBytes,
      pids: input.pids ?? cfg.defaultPids,
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
    this.mgr.admission.admitCount(this.mgr.countActive());
    store.insert(rec);
    return this.mgr.exclusive(id, async () => {
      try {
        const source = await this.mgr.sources.resolve({ template: spec.template, image: spec.image, pullPolicy: spec.pullPolicy }, progress);
        await rootfs.prepare(id, source, spec.diskBytes).catch((e: Error) => {
          throw e instanceof RangeError ? errors.invalid('disk', e.message) : e;
        });
        await writeFile(join(rootfs.dirs(id).root, 'image-config.json'), JSON.stringify(source.config));
        await this.mgr.boot.boot(rec, source.config);
        // Docker's rule: cmd replaces the image's Cmd, entrypoint (even []) replaces its Entrypoint.
        const main = composeCommand(source.config, input.entrypoint, spec.cmd);
        if (main.length) await this.mgr.live.get(id)!.startMain(main);
        // A template's service is up (its ready command passed) when create returns.
        if (source.start) await startAndWaitReady(this.mgr.live.get(id)!, source.start);
        store.addEvent(id, 'created', `sandbox created from ${source.ref} on ${runtime}`);
        return this.mgr.get(id);
      } catch (e) {
        throw await this.rollBack(id, e);
      }
    });
  }

  /**
   * Undo a create that failed: nothing of it stays behind. When undoing fails too (a wedged runtime),
   * the record stays in state error saying so, and `rm -f` finishes the job later.
   */
  private async rollBack(id: string, e: unknown): Promise<CordonError> {
    const msg = (e as Error).message;
    try {
      await this.mgr.teardown.teardown(id);
    } catch (te) {
      const reason = `create failed: ${msg}; cleaning up failed too: ${(te as Error).message}; remove it with cordon rm -f ${id}`;
      return this.mgr.fail(id, reason, e, `creating sandbox ${id} failed and it stays in state error: ${reason}`);
    }
    this.mgr.store.delete(id);
    if (e instanceof CordonError && e.code !== 'deadline_exceeded') return e;
    return new CordonError(e instanceof CordonError ? e.code : 'internal', `creating the sandbox failed and was rolled back: ${msg}`);
  }
}
