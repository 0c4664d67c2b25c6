import { existsSync, mkdirSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RuntimeName } from '../config.js';
import { errors } from '../errors/registry.js';
import { needsNamespace } from '../net/types.js';
import { HELPER_DIR } from '../runtime/oci-spec.js';
import type { ContainerSpec, Runtime, RuntimeState } from '../runtime/types.js';
import type { BindMount, NetworkAttachment, RootfsDirs } from './drivers.js';
import { AGENT_INIT, AGENT_PATH, AGENT_PIDS_HEADROOM, AGENT_RUN_DIR } from './agent/agent-setup.js';
import { LiveSandbox } from './live-sandbox.js';
import { runcAccountFilesProblem } from './users.js';
import type { SandboxManager } from './sandbox-manager.js';
import type { ImageConfig, SandboxRecord } from './types.js';

const NO_TRAFFIC = { rx: 0, tx: 0 };
/** How long a boot waits for the agent to connect before the sandbox is served by the exec path. */
const AGENT_BOOT_WAIT_MS = 10_000;
/** Marks (in the bundle) a sandbox whose init runs the agent, so a restarted daemon waits for it. */
const AGENT_MARKER = 'agent-init';

/**
 * A sandbox's container on its runtime: booting it on a prepared rootfs, the in-memory handles of a
 * running one (and the watch on its exit), and halting it again.
 */
export class ContainerBoot {
  /** The exit watch of each running sandbox; aborted when the engine itself ends the container. */
  private readonly watches = new Map<string, AbortController>();

  constructor(private readonly mgr: SandboxManager) {}

  /** Start the container on an already prepared rootfs and mark the sandbox running. */
  async boot(rec: SandboxRecord, image: ImageConfig): Promise<void> {
    const { id, spec } = rec;
    const { rootfs, net, store } = this.mgr;
    const dirs = rootfs.dirs(id);
    await rootfs.mount(id);
    if (this.mgr.runtimeFor(spec.runtime).capabilities.readsAccountFiles) {
      const problem = await runcAccountFilesProblem(dirs.rootfs);
      if (problem) throw errors.invalid('runtime', `${problem}; use --runtime crun or runsc for this image`);
    }
    const added = (spec.network?.addHosts ?? []).map((h) => `${h.ip}\t${h.host}\n`).join('');
    await writeFile(join(dirs.bundle, 'hosts'), `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${spec.hostname}\n${added}`);
    let network: NetworkAttachment | undefined;
    if (spec.network && needsNamespace(spec.network)) {
      if (!net) throw errors.invalid('network', 'this daemon has no network capability');
      network = await net.attach(id, spec.network, dirs);
    }
    await writeFile(join(dirs.bundle, 'hostname'), `${spec.hostname}\n`);
    const storageBinds = (await this.mgr.storage?.binds(id, spec).catch(async (e: Error) => {
      await net?.detach(id);
      throw e;
    })) ?? [];
    const rt = this.mgr.runtimeFor(spec.runtime);
    await rt.delete(id, dirs.bundle).catch(() => {});
    const marker = join(dirs.bundle, AGENT_MARKER);
    if (this.mgr.helpers.agent) await writeFile(marker, '1\n');
    else await rm(marker, { force: true });
    const runtimeState = await rt.create(this.containerSpec(rec, dirs, network, storageBinds)).catch(async (e: Error) => {
      await net?.detach(id);
      await this.mgr.storage?.release(id).catch(() => {});
      throw e;
    });
    const now = Date.now();
    const expiresAt = spec.timeoutMs > 0 ? now + spec.timeoutMs : undefined;
    store.update(id, { state: 'running', stateReason: undefined, runtimeState, startedAt: now, expiresAt });
    const live = this.attach(id, rt, image, runtimeState);
    this.mgr.schedule(id, expiresAt);
    if (!this.mgr.helpers.agent) {
      if (this.mgr.cfg.agent === 'on') store.addEvent(id, 'agent', "this daemon has no agent binary (npm run build needs golang-1.23-go; see scripts/setup-host.sh); commands and files use the runtime's exec path");
    } else if (!(await live.waitForAgent(AGENT_BOOT_WAIT_MS)) && this.mgr.live.get(id) === live) {
      store.addEvent(id, 'agent', `the agent did not connect within ${AGENT_BOOT_WAIT_MS / 1000}s; commands and files use the runtime's exec path until it does`);
    }
  }

  /** What the runtime is given for a sandbox (a restore from a checkpoint must give the same again). */
  containerSpec(rec: SandboxRecord, dirs: RootfsDirs, network?: NetworkAttachment, storageBinds: BindMount[] = []): ContainerSpec {
    const { id, spec } = rec;
    const { helpers } = this.mgr;
    const agentBinds = [];
    if (helpers.agent) {
      const socketDir = this.mgr.agentSocketDir(id);
      // The bind source must exist before the runtime starts (or restores) the container.
      mkdirSync(socketDir, { recursive: true, mode: 0o700 });
      agentBinds.push({ source: helpers.agent, destination: AGENT_PATH, readOnly: true }, { source: socketDir, destination: AGENT_RUN_DIR, readOnly: true });
    }
    return {
      id,
      bundleDir: dirs.bundle,
      rootfsDir: dirs.rootfs,
      readOnlyRootfs: spec.readOnlyRootfs,
      hostname: spec.hostname!,
      cpus: spec.cpus,
      memoryBytes: spec.memoryBytes,
      pids: spec.pids + (helpers.agent ? AGENT_PIDS_HEADROOM : 0),
      tmpfs: spec.tmpfs,
      binds: [
        { source: helpers.busybox, destination: `${HELPER_DIR}/busybox`, readOnly: true },
        { source: helpers.tini, destination: `${HELPER_DIR}/tini`, readOnly: true },
        { source: join(dirs.bundle, 'hosts'), destination: '/etc/hosts', readOnly: true },
        { source: join(dirs.bundle, 'hostname'), destination: '/etc/hostname', readOnly: true },
        ...agentBinds,
        ...(network?.binds ?? []),
        ...storageBinds,
      ],
      netnsPath: network?.netnsPath,
      noNewPrivileges: !!spec.noNewPrivileges,
      ...(helpers.agent ? { init: AGENT_INIT, hostSockets: true } : {}),
    };
  }

  /** Give a running sandbox its in-memory handles and watch for its exit (also after a daemon restart). */
  attach(id: string, rt: Runtime, image: ImageConfig, state: RuntimeState | undefined): LiveSandbox {
    const { cfg, store, net } = this.mgr;
    const counters = () => net?.counters(id) ?? Promise.resolve(NO_TRAFFIC);
    const alive = () => rt.alive(id, state);
    // The agent is served when this daemon runs one, or the sandbox was started with one (a restart with --agent off).
    const withAgent = !!this.mgr.helpers.agent || existsSync(join(this.mgr.rootfs.dirs(id).bundle, AGENT_MARKER));
    const agent = withAgent ? { socketDir: this.mgr.agentSocketDir(id), isRunning: () => store.get(id)?.state === 'running' } : undefined;
    const live = new LiveSandbox(this.mgr.get(id), rt, image, this.mgr.rootfs.dirs(id).rootfs, counters, alive, cfg, (type, message) => store.addEvent(id, type, message), agent);
    live.telemetry = this.mgr.telemetry;
    this.mgr.live.set(id, live);
    this.watch(id, rt, state, live);
    return live;
  }

  private watch(id: string, rt: Runtime, state: RuntimeState | undefined, live: LiveSandbox): void {
    this.unwatch(id);
    const ac = new AbortController();
    this.watches.set(id, ac);
    rt.wait(id, state, ac.signal).then(
      (exit) => {
        if (this.watches.get(id) !== ac) return;
        this.watches.delete(id);
        this.mgr.onExit?.(id, exit, live);
      },
      () => {}, // aborted: the engine ended the container itself
    );
  }

  /** Whether the sandbox's init runs the agent (so a restarted daemon can wait for it to reconnect). */
  startedWithAgent(id: string): boolean {
    return existsSync(join(this.mgr.rootfs.dirs(id).bundle, AGENT_MARKER));
  }

  /** Stop watching: what ends the container from now on is the engine's doing, not a death to report. */
  unwatch(id: string): void {
    this.watches.get(id)?.abort();
    this.watches.delete(id);
  }

  /** Stop watching every sandbox (the daemon is closing; the sandboxes keep running). */
  unwatchAll(): void {
    for (const id of [...this.watches.keys()]) this.unwatch(id);
  }

  /** TERM every process, wait up to the grace period, then KILL; the rootfs stays for a later start. */
  async halt(rec: SandboxRecord, graceMs: number): Promise<void> {
    const rt = this.mgr.runtimeFor(rec.runtime);
    this.mgr.unschedule(rec.id);
    this.unwatch(rec.id);
    if (rec.state === 'paused') await rt.resume(rec.id).catch(() => {});
    // TERM the sandbox's own processes first and give them the grace period, as Docker does with a
    // container's main process. Signalling everything at once would also hit the init (tini), which
    // exits at once and takes the pid namespace down with SIGKILL before any TERM handler has run.
    const deadline = Date.now() + graceMs;
    const procs = this.mgr.live.get(rec.id)?.processes;
    const running = () => procs?.list().filter((p) => p.running) ?? [];
    await Promise.all(running().map((p) => procs!.signal(p.pid, 'SIGTERM').catch(() => {})));
    while (Date.now() < deadline && running().length) await new Promise((r) => setTimeout(r, 20));
    await rt.killAll(rec.id, 'SIGTERM').catch(() => {});
    const left = AbortSignal.timeout(Math.max(1, deadline - Date.now()));
    const exited = await rt.wait(rec.id, rec.runtimeState, left).then(() => true, () => false);
    if (!exited) await rt.killAll(rec.id, 'SIGKILL').catch(() => {});
    await this.unboot(rec.id, rec.runtime);
  }

  /** Give back what a booted sandbox holds (container, live handles, network, mounts), keeping its files. */
  async unboot(id: string, runtime: RuntimeName): Promise<void> {
    this.mgr.forget(id);
    await this.mgr.runtimeFor(runtime).delete(id, this.mgr.rootfs.dirs(id).bundle);
    await this.mgr.net?.detach(id);
    await this.mgr.storage?.release(id);
    await this.mgr.rootfs.unmount(id);
  }
}
