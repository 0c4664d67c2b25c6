import type { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { CordonError } from '../../errors/registry.js';
import { removeTree, TemplateLayerDirs } from '../../image/template-build/layer-dirs.js';
import type { NetworkSpec } from '../../net/types.js';
import { HELPER_DIR } from '../../runtime/oci-spec.js';
import type { CommandRequest, LiveSandbox } from '../live-sandbox.js';
import type { ProcessEvent } from '../process-manager.js';
import type { ImageConfig } from '../types.js';
import { TRANSIENT_PREFIX, type TemplateService } from './template-service.js';

export const BUSYBOX = `${HELPER_DIR}/busybox`;
/** How much of a failed step's output its error carries. */
const TAIL_BYTES = 4096;
/** A build step's sandbox outlives its command by at most this much (its expiry, should the daemon die). */
const SANDBOX_SLACK_MS = 5 * 60_000;

/** Where build progress goes: events, with the transport's backlog so a slow client slows the step down. */
export interface BuildOutput {
  event(ev: BuildEvent): void;
  backlog(): number;
  onDrain(cb: () => void): void;
}

export type BuildEvent =
  | { type: 'status'; message: string }
  | { type: 'step'; step: number; total: number; instruction: string }
  | { type: 'cached'; step: number; layer: string }
  | { type: 'sandbox'; step: number; sandbox_id: string }
  | { type: 'log'; step: number; stream: 'stdout' | 'stderr'; data: string }
  | { type: 'layer'; step: number; layer: string };

export interface StepSandboxOptions {
  step: number;
  lowerDirs: string[];
  config: ImageConfig;
  /** A directory to create (as root) before the step: a WORKDIR not made yet. */
  mkdir?: string;
  cpus?: number;
  memoryBytes?: number;
  network?: NetworkSpec;
  timeoutMs: number;
  templateName: string;
}

/**
 * Run one build step in a sandbox of the daemon's default runtime on the layers so far, then turn the
 * sandbox's writable layer into a new read-only layer directory. The sandbox is removed whatever happens.
 */
export async function inStepSandbox(svc: TemplateService, out: BuildOutput, o: StepSandboxOptions, fn: (live: LiveSandbox) => Promise<void>): Promise<string>;
/** With takeLayer false: the sandbox only checks something (the start and ready commands); nothing is kept. */
export async function inStepSandbox(svc: TemplateService, out: BuildOutput, o: StepSandboxOptions, fn: (live: LiveSandbox) => Promise<void>, takeLayer: false): Promise<undefined>;
export async function inStepSandbox(svc: TemplateService, out: BuildOutput, o: StepSandboxOptions, fn: (live: LiveSandbox) => Promise<void>, takeLayer = true): Promise<string | undefined> {
  const mgr = svc.mgr!;
  const source = `${TRANSIENT_PREFIX}${randomBytes(6).toString('hex')}`;
  svc.addTransient(source, { lowerDirs: o.lowerDirs, config: o.config, ref: `build of template ${o.templateName}, step ${o.step}` });
  let id: string | undefined;
  const staging = svc.layers.staging();
  try {
    const rec = await mgr.create({
      template: source,
      // The image's ENTRYPOINT/CMD is for the template's sandboxes, not for its build steps.
      entrypoint: [],
      cpus: o.cpus,
      memoryBytes: o.memoryBytes,
      network: o.network,
      timeoutMs: o.timeoutMs + SANDBOX_SLACK_MS,
      labels: { 'cordon.build': o.templateName },
    });
    id = rec.id;
    out.event({ type: 'sandbox', step: o.step, sandbox_id: id });
    const live = mgr.running(id);
    if (o.mkdir) {
      const r = await live.exec({ cmd: [BUSYBOX, 'mkdir', '-p', '--', o.mkdir], user: 'root', cwd: '/', timeoutMs: 60_000 });
      if (r.exitCode !== 0) throw new CordonError('invalid_argument', `step ${o.step}: WORKDIR ${o.mkdir} cannot be created: ${r.stderr.trim().slice(-500)}`);
    }
    await fn(live);
    if (!takeLayer) return undefined;
    // Nothing of the step runs any more; its files are what counts, so no grace period.
    await mgr.stop(id, 0);
    await mgr.rootfs.takeUpper!(id, staging);
    const layer = TemplateLayerDirs.newId();
    await svc.layers.commit(staging, layer);
    // Held from the moment it exists: a template removal running meanwhile must not free it.
    svc.pin(layer);
    return layer;
  } finally {
    svc.dropTransient(source);
    if (id) await mgr.remove(id, true).catch(() => {});
    await removeTree(staging).catch(() => {});
  }
}

export interface RunOptions extends CommandRequest {
  step: number;
  /** What the error calls the step ("RUN make"). */
  what: string;
  signal?: AbortSignal;
  /** Bytes to send to stdin, then close it. */
  input?: Readable;
}

/** Run a command to its end, its output streamed as log events; a non-zero exit fails the step with its output. */
export async function runStepCommand(live: LiveSandbox, out: BuildOutput, o: RunOptions): Promise<void> {
  const { step, what, signal, input, ...req } = o;
  const proc = await live.start({ ...req, stdin: !!input });
  let tail = '';
  const kill = () => void live.processes.signal(proc.info.id, 'SIGKILL').catch(() => {});
  signal?.addEventListener('abort', kill, { once: true });
  const exited = new Promise<Extract<ProcessEvent, { type: 'exit' }>>((resolve, reject) => {
    proc.subscribe({
      push: (ev) => {
        if (ev.type === 'stdout' || ev.type === 'stderr' || ev.type === 'pty') {
          const data = ev.data.toString('utf8');
          tail = (tail + data).slice(-TAIL_BYTES);
          out.event({ type: 'log', step, stream: ev.type === 'stderr' ? 'stderr' : 'stdout', data });
        } else if (ev.type === 'exit') resolve(ev);
      },
      backlog: () => out.backlog(),
      onDrain: (cb) => out.onDrain(cb),
      drop: (why) => reject(new CordonError('unavailable', `the build sandbox went away during step ${step} (${what}): ${why.message}`)),
    });
  });
  try {
    if (input) {
      for await (const chunk of input) await live.processes.sendStdin(proc.info.id, chunk as Buffer);
      live.processes.closeStdin(proc.info.id);
    }
  } catch (e) {
    kill();
    await exited.catch(() => {});
    throw e;
  }
  const exit = await exited.finally(() => signal?.removeEventListener('abort', kill));
  if (signal?.aborted) throw new CordonError('invalid_state', `the build was cancelled during step ${step} (${what})`);
  if (exit.exitCode !== 0) {
    const why = exit.timedOut ? `did not finish within ${Math.round((req.timeoutMs ?? 0) / 1000)}s` : exit.oomKilled ? 'ran out of memory (give the build more with --memory)' : `failed with exit code ${exit.exitCode}`;
    throw new CordonError('invalid_argument', `step ${step} (${what}) ${why}; its last output:\n${tail.trim() || '(none)'}`, { step, exit_code: exit.exitCode, output: tail });
  }
}
