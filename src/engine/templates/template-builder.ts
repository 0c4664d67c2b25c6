import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { CordonError } from '../../errors/registry.js';
import { BASE_CONFIG, recipeHash } from '../../image/base-template.js';
import { listContext, hashItems, selectCopy, type ContextEntry } from '../../image/template-build/context.js';
import { copyTar } from '../../image/template-build/copy-tar.js';
import { MAX_DOCKERFILE_BYTES, parseDockerfile, type Instruction } from '../../image/template-build/dockerfile.js';
import { DockerfileSyntaxError, word, words } from '../../image/template-build/shell-words.js';
import type { NetworkSpec } from '../../net/types.js';
import type { TemplateRecord } from '../../store/templates.js';
import { applyConfig, argEnv, bad, command, DEFAULT_SHELL, varsOf, type BuildState } from './build-state.js';
import { composeCommand } from '../exec-env.js';
import { MAX_WARM } from './warm-pool.js';
import { DEFAULT_READY_TIMEOUT_MS, startAndWaitReady } from './start-ready.js';
import { BUSYBOX, inStepSandbox, runStepCommand, type BuildOutput } from './step-sandbox.js';
import type { TemplateService } from './template-service.js';

export const TEMPLATE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** A name with an optional E2B tag ("name:tag"); a name alone is the "default" tag. */
export const TAGGED_TEMPLATE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}(?::[a-z0-9][a-z0-9._-]{0,62})?$/;
const DEFAULT_STEP_TIMEOUT_MS = 30 * 60_000;

export interface BuildRequest {
  name: string;
  /** The unpacked build context (the daemon's own private copy). */
  contextDir: string;
  /** The Dockerfile's path inside the context. */
  dockerfile: string;
  buildArgs: Record<string, string>;
  cpus?: number;
  memoryBytes?: number;
  noCache: boolean;
  network?: NetworkSpec;
  startCmd?: string;
  readyCmd?: string;
  readyTimeoutMs?: number;
  /** Keep this many started sandboxes of the template (its warm pool); undefined keeps the previous build's. */
  warm?: number;
  stepTimeoutMs?: number;
  signal?: AbortSignal;
  /** E2B: the build's steps gave no WORKDIR, so the template's sandboxes start commands in the user's home. */
  homeWorkdir?: boolean;
}

/** Builds templates from Dockerfiles, one sandbox per RUN/COPY/ADD step, each step cached by content. */
export class TemplateBuilder {
  private readonly building = new Set<string>();
  constructor(private readonly svc: TemplateService) {}

  async build(req: BuildRequest, out: BuildOutput): Promise<TemplateRecord> {
    if (!TAGGED_TEMPLATE_NAME.test(req.name)) throw new CordonError('invalid_argument', 'name: template names are lowercase letters, digits, . _ - (at most 63)');
    if (req.name === 'base' || req.name.startsWith('base:')) throw new CordonError('invalid_argument', 'name: "base" is the built-in template; choose another name');
    if (this.building.has(req.name)) throw new CordonError('invalid_state', `template ${req.name} is being built already; wait for that build to end`, { template: req.name });
    if (req.warm !== undefined && !(Number.isInteger(req.warm) && req.warm >= 0 && req.warm <= MAX_WARM)) throw new CordonError('invalid_argument', `warm: give a whole number from 0 to ${MAX_WARM}`);
    if (req.readyCmd && !req.startCmd) throw new CordonError('invalid_argument', 'ready_cmd: give a start command too; the ready command checks that it is up');
    this.building.add(req.name);
    const made: string[] = [];
    const held: string[] = [];
    try {
      const text = await readDockerfile(req.contextDir, req.dockerfile);
      let df;
      try {
        df = parseDockerfile(text);
      } catch (e) {
        throw e instanceof DockerfileSyntaxError ? new CordonError('invalid_argument', `Dockerfile: ${e.message}`) : e;
      }
      const run = new BuildRun(this.svc, req, out, df.escape, made, held, text);
      return await run.all(df.instructions);
    } catch (e) {
      if (e instanceof DockerfileSyntaxError) throw new CordonError('invalid_argument', `Dockerfile: ${e.message}`);
      throw e;
    } finally {
      for (const l of held) this.svc.unpin(l);
      // A failed build keeps nothing it made; a finished one's layers belong to its template now.
      if (made.length) await this.svc.collect(made).catch(() => {});
      this.building.delete(req.name);
    }
  }
}

async function readDockerfile(contextDir: string, rel: string): Promise<string> {
  const parts = posix.normalize(rel).split('/');
  if (posix.isAbsolute(rel) || parts.includes('..') || rel.includes('\0')) throw new CordonError('invalid_argument', `dockerfile: ${rel} must be a path inside the build context`);
  const path = join(contextDir, ...parts);
  // Checked component by component: a symlink in the context is never followed.
  for (let i = 1; i <= parts.length; i++) {
    const st = await lstat(join(contextDir, ...parts.slice(0, i))).catch(() => undefined);
    if (!st) throw new CordonError('invalid_argument', `dockerfile: ${rel} is not in the build context; pass -f with the Dockerfile's path`);
    if (st.isSymbolicLink()) throw new CordonError('invalid_argument', `dockerfile: ${rel} goes through a symlink; give the real path`);
    if (i === parts.length && !st.isFile()) throw new CordonError('invalid_argument', `dockerfile: ${rel} is not a regular file`);
    if (i === parts.length && st.size > MAX_DOCKERFILE_BYTES) throw new CordonError('invalid_argument', `dockerfile: ${rel} is larger than ${MAX_DOCKERFILE_BYTES} bytes`);
  }
  const fh = await open(path, 'r');
  try {
    return (await fh.readFile()).toString('utf8');
  } finally {
    await fh.close();
  }
}

const sha = (v: unknown) => createHash('sha256').update(JSON.stringify(v)).digest('hex');

class BuildRun {
  private state?: BuildState;
  private entries?: ContextEntry[];
  private step = 0;
  private total = 0;

  constructor(
    private readonly svc: TemplateService,
    private readonly req: BuildRequest,
    private readonly out: BuildOutput,
    private readonly escape: string,
    private readonly made: string[],
    private readonly held: string[],
    private readonly text: string,
  ) {}

  async all(instructions: Instruction[]): Promise<TemplateRecord> {
    this.total = instructions.length;
    const preFrom = new Map<string, string>();
    for (const ins of instructions) {
      this.step++;
      if (this.req.signal?.aborted) throw new CordonError('invalid_state', `the build was cancelled before step ${this.step}`);
      this.out.event({ type: 'step', step: this.step, total: this.total, instruction: ins.text.slice(0, 1000) });
      if (!this.state) {
        if (ins.keyword === 'ARG') {
          for (const w of words(ins.args, preFrom, this.escape)) {
            const i = w.indexOf('=');
            const name = i < 0 ? w : w.slice(0, i);
            const v = this.req.buildArgs[name] ?? (i < 0 ? undefined : w.slice(i + 1));
            if (v !== undefined) preFrom.set(name, v);
          }
          continue;
        }
        if (ins.keyword !== 'FROM') throw bad(ins, 'comes before FROM; a Dockerfile starts with FROM (ARG may come first)');
        this.state = await this.from(ins, preFrom);
        continue;
      }
      if (ins.keyword === 'FROM') throw bad(ins, 'starts a second stage; multi-stage builds are not supported, build each stage as its own template and use FROM <template>');
      if (applyConfig(this.state, ins, this.req.buildArgs, this.escape)) continue;
      switch (ins.keyword) {
        case 'RUN':
          await this.run(ins);
          break;
        case 'COPY':
        case 'ADD':
          await this.copy(ins);
          break;
        case 'VOLUME':
        case 'STOPSIGNAL':
        case 'HEALTHCHECK':
        case 'MAINTAINER':
          this.out.event({ type: 'status', message: `line ${ins.line}: ${ins.keyword} is recorded nowhere and has no effect on a template` });
          break;
        case 'ONBUILD':
          throw bad(ins, 'is not supported');
        default:
          throw bad(ins, 'is not a Dockerfile instruction this builder knows');
      }
    }
    if (!this.state) throw new CordonError('invalid_argument', 'Dockerfile: no FROM instruction');
    const s = this.state;
    if (s.workdirPending) await this.layerStep({ kind: 'WORKDIR', dir: s.workdirPending }, async () => {});
    if (this.req.homeWorkdir) s.config.homeWorkdir = true;
    const rec: TemplateRecord = {
      name: this.req.name,
      base: s.base,
      parentTemplate: s.parentTemplate,
      layers: s.layers,
      config: s.config,
      exposed: s.exposed,
      labels: s.labels,
      startCmd: this.req.startCmd,
      readyCmd: this.req.readyCmd,
      readyTimeoutMs: this.req.readyTimeoutMs,
      cpus: this.req.cpus,
      memoryBytes: this.req.memoryBytes,
      dockerfile: this.text,
      createdAt: Date.now(),
    };
    // Its layers must still be there (a concurrent removal frees only unpinned ones).
    const lowerDirs = await this.svc.lowerDirs(rec.base, rec.layers, `template ${rec.name}`);
    if (rec.startCmd) rec.snapshot = await this.checkStart(rec, lowerDirs);
    try {
      await this.svc.record(rec, this.req.warm);
    } finally {
      if (rec.snapshot) await this.svc.unholdSnapshot(rec.snapshot);
    }
    this.made.length = 0;
    return this.svc.get(rec.name);
  }

  /**
   * Run the start command once and wait for the ready command, as every sandbox of the template will.
   * Where the runtime checkpoints memory, the sandbox is then snapshotted with the service up: sandboxes
   * of the template are restored from it (their service answers at once). Elsewhere each create runs the
   * start command and waits for the ready command again. The check runs without a network, so that its
   * snapshot serves the common create without one (a create with a network boots fresh instead).
   */
  private async checkStart(rec: TemplateRecord, lowerDirs: string[]): Promise<string | undefined> {
    const step = this.total;
    this.out.event({ type: 'status', message: `starting ${rec.startCmd}${rec.readyCmd ? ` and waiting until ${rec.readyCmd} passes` : ''}` });
    let snapshot: string | undefined;
    await inStepSandbox(
      this.svc,
      this.out,
      { step, lowerDirs, config: rec.config, cpus: this.req.cpus, memoryBytes: this.req.memoryBytes, timeoutMs: rec.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS, templateName: this.req.name },
      async (live) => {
        const mgr = this.svc.mgr!;
        // The image's ENTRYPOINT/CMD runs as it would in a cold create of the template.
        const main = composeCommand(rec.config, undefined, undefined);
        if (main.length) await live.startMain(main);
        try {
          await startAndWaitReady(live, { cmd: rec.startCmd!, ready: rec.readyCmd, readyTimeoutMs: rec.readyTimeoutMs }, (stream, data) => this.out.event({ type: 'log', step, stream, data }));
        } catch (e) {
          throw e instanceof CordonError ? new CordonError('invalid_argument', `the template's ${e.message}`, e.details) : e;
        }
        if (mgr.runtimeFor(mgr.get(live.id).runtime).capabilities.checkpoint !== 'memory') return;
        this.out.event({ type: 'status', message: 'the service is ready; taking a memory snapshot of it' });
        const snap = await mgr.snapshots.create(live.id, { autoRemove: true });
        this.svc.holdSnapshot(snap.id);
        snapshot = snap.id;
      },
      false,
    ).catch(async (e) => {
      if (snapshot) await this.svc.unholdSnapshot(snapshot);
      throw e;
    });
    return snapshot;
  }

  private async from(ins: Instruction, preFrom: Map<string, string>): Promise<BuildState> {
    if (ins.flags.platform) throw bad(ins, '--platform is not supported; this host runs its own architecture');
    const ws = words(ins.args, preFrom, this.escape);
    if (!(ws.length === 1 || (ws.length === 3 && ws[1].toLowerCase() === 'as'))) throw bad(ins, 'takes an image or template, optionally "AS name"');
    const ref = ws[0];
    const fresh = { exposed: [] as string[], labels: {} as Record<string, string>, args: new Map<string, string>(), shell: DEFAULT_SHELL, cmdSet: false };
    if (ref === 'scratch') throw bad(ins, 'scratch is not supported; start FROM base, an image or a template');
    if (ref === 'base') return { ...fresh, base: { kind: 'base' }, layers: [], parentKey: `base:${recipeHash()}`, config: clone(BASE_CONFIG) };
    const t = this.svc.find(ref);
    if (t) {
      if (ref === this.req.name) throw bad(ins, `names the template being built (${ref}); a template cannot be built FROM itself`);
      for (const l of t.layers) this.hold(l);
      const parentKey = t.layers.length ? t.layers[t.layers.length - 1] : t.base.kind === 'base' ? `base:${recipeHash()}` : `image:${t.base.id}`;
      return { ...fresh, base: t.base, parentTemplate: ref, layers: [...t.layers], parentKey, config: clone(t.config), exposed: [...t.exposed], labels: { ...t.labels } };
    }
    if (!this.svc.images) throw bad(ins, `${ref} is not a template, and this daemon has no image store`);
    const img = await this.svc.images.pin(ref, (message) => this.out.event({ type: 'status', message }));
    return { ...fresh, base: { kind: 'image', ref: img.name, id: img.id, diffIds: img.diffIds }, layers: [], parentKey: `image:${img.id}`, config: clone(img.config) };
  }

  private hold(layer: string): void {
    this.svc.pin(layer);
    this.held.push(layer);
  }

  /**
   * A step that makes a layer: reused when a layer with the same cache key exists (no sandbox is made),
   * else made in a step sandbox by `fn`.
   */
  private async layerStep(keyParts: Record<string, unknown>, fn: Parameters<typeof inStepSandbox>[3], cacheable = true): Promise<void> {
    const s = this.state!;
    const key = sha({ parent: s.parentKey, user: s.config.user, workdir: s.config.workdir, env: s.config.env, args: [...s.args], ...keyParts });
    const hit = cacheable && !this.req.noCache ? this.svc.store.layerFor(key) : undefined;
    if (hit && this.svc.layers.has(hit.id)) {
      this.hold(hit.id);
      this.out.event({ type: 'cached', step: this.step, layer: hit.id });
      this.push(hit.id);
      return;
    }
    const lowerDirs = await this.svc.lowerDirs(s.base, s.layers, `the build of ${this.req.name}`);
    const layer = await inStepSandbox(
      this.svc,
      this.out,
      {
        step: this.step,
        lowerDirs,
        config: s.config,
        mkdir: s.workdirPending,
        cpus: this.req.cpus,
        memoryBytes: this.req.memoryBytes,
        network: this.req.network,
        timeoutMs: this.req.stepTimeoutMs ?? DEFAULT_STEP_TIMEOUT_MS,
        templateName: this.req.name,
      },
      fn,
    );
    this.made.push(layer);
    this.held.push(layer); // pinned by inStepSandbox
    this.svc.store.putLayer({ id: layer, cacheKey: key, parent: s.layers[s.layers.length - 1], createdAt: Date.now() });
    this.out.event({ type: 'layer', step: this.step, layer });
    this.push(layer);
  }

  private push(layer: string): void {
    const s = this.state!;
    s.layers.push(layer);
    s.parentKey = layer;
    s.workdirPending = undefined;
  }

  private async run(ins: Instruction): Promise<void> {
    if (ins.flags.mount) throw bad(ins, '--mount is not supported');
    const s = this.state!;
    const argv = command(s, ins);
    const what = `RUN ${ins.args.slice(0, 200)}`;
    // --user (a cordon extension, used by E2B's runCmd with a user): this step only, USER stays.
    const user = ins.flags.user ? word(ins.flags.user, varsOf(s), this.escape) : s.config.user;
    if (ins.flags.user && (!user || /\s/.test(user))) throw bad(ins, '--user needs one user (name, uid, user:group or uid:gid)');
    await this.layerStep({ kind: 'RUN', argv, shell: s.shell, ...(ins.flags.user ? { runUser: user } : {}) }, (live) =>
      runStepCommand(live, this.out, { step: this.step, what, cmd: argv, env: argEnv(s), user, cwd: s.config.workdir ?? '/', timeoutMs: this.req.stepTimeoutMs ?? DEFAULT_STEP_TIMEOUT_MS, signal: this.req.signal }),
    );
  }

  private async copy(ins: Instruction): Promise<void> {
    const s = this.state!;
    if (ins.flags.from) throw bad(ins, '--from is not supported (no multi-stage builds); copy from the build context');
    const vars = varsOf(s);
    const args = ins.json ?? words(ins.args, vars, this.escape);
    if (args.length < 2) throw bad(ins, 'needs at least one source and a destination');
    const srcs = args.slice(0, -1).map((a) => (ins.json ? word(a, vars, this.escape) : a));
    const rawDest = ins.json ? word(args[args.length - 1], vars, this.escape) : args[args.length - 1];
    const dest = resolveDest(rawDest, s.config.workdir);
    const chown = ins.flags.chown ? word(ins.flags.chown, vars, this.escape) : undefined;
    let mode: number | undefined;
    if (ins.flags.chmod) {
      if (!/^[0-7]{3,4}$/.test(ins.flags.chmod)) throw bad(ins, `--chmod=${ins.flags.chmod} must be octal, e.g. --chmod=0644`);
      mode = parseInt(ins.flags.chmod, 8);
    }
    const urls = srcs.filter((u) => /^[a-z][a-z0-9+.-]*:\/\//i.test(u));
    if (urls.length) {
      if (ins.keyword === 'COPY') throw bad(ins, `cannot copy the URL ${urls[0]}; use ADD with --network, or download it in a RUN step`);
      throw bad(ins, `${urls[0]}: ADD of a URL is not supported by this builder yet; download it in a RUN step (the build then needs --network)`);
    }
    this.entries ??= await listContext(this.req.contextDir);
    const items = selectCopy(this.entries, srcs, dest);
    const archive = ins.keyword === 'ADD' && items.length === 1 && items[0].entry.type === 'file' ? await archiveKind(join(this.req.contextDir, items[0].entry.rel)) : undefined;
    const inputs = await hashItems(this.req.contextDir, items);
    const what = `${ins.keyword} ${ins.args.slice(0, 200)}`;
    await this.layerStep({ kind: ins.keyword, dest, chown, mode, inputs, archive }, async (live) => {
      const user = chown ? await live.resolveUser(chown) : { uid: 0, gid: 0 };
      const gid = chown && !chown.includes(':') ? user.uid : user.gid;
      if (archive !== undefined) {
        // ADD of a local archive: unpacked into dest inside the sandbox (it may hold anything).
        const dir = dest;
        const flag = { tar: [], gzip: ['-z'], bzip2: ['-j'], xz: ['-J'] }[archive];
        await runStepCommand(live, this.out, { step: this.step, what, cmd: [BUSYBOX, 'mkdir', '-p', '--', dir], user: 'root', cwd: '/' });
        await runStepCommand(live, this.out, { step: this.step, what, cmd: [BUSYBOX, 'tar', '-x', ...flag, '-f', '-', '-C', dir], user: 'root', cwd: '/', input: createReadStream(join(this.req.contextDir, items[0].entry.rel)), signal: this.req.signal });
        return;
      }
      const tar = copyTar(this.req.contextDir, items, { uid: user.uid, gid, mode });
      await runStepCommand(live, this.out, { step: this.step, what, cmd: [BUSYBOX, 'tar', '-x', '--numeric-owner', '-f', '-', '-C', '/'], user: 'root', cwd: '/', input: tar, signal: this.req.signal });
    });
  }
}

/** An absolute destination in the image; relative ones are under WORKDIR; a trailing "/" is kept. */
function resolveDest(dest: string, workdir = '/'): string {
  if (!dest || dest.includes('\0')) throw new CordonError('invalid_argument', 'COPY destination is empty');
  const abs = posix.normalize(posix.isAbsolute(dest) ? dest : posix.join(workdir, dest));
  return dest.endsWith('/') || dest === '.' ? `${abs.replace(/\/$/, '')}/` : abs;
}

type ArchiveKind = 'tar' | 'gzip' | 'bzip2' | 'xz';

/** Whether a context file is a tar archive (plain or compressed), which ADD unpacks. */
async function archiveKind(path: string): Promise<ArchiveKind | undefined> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(512);
    const { bytesRead } = await fh.read(b, 0, 512, 0);
    if (b[0] === 0x1f && b[1] === 0x8b) return 'gzip';
    if (b.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2';
    if (b.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
    if (bytesRead >= 262 && b.subarray(257, 262).toString('latin1') === 'ustar') return 'tar';
    return undefined;
  } finally {
    await fh.close();
  }
}

function clone<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}
