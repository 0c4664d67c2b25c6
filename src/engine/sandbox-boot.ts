import { existsSync, mkdirSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RuntimeName } from '../config.js';
import { errors } from '../errors/registry.js';
import { needsNamespace } from '../net/types.js';
import { HELPER_DIR } from '../runtime/oci-spec.js';
import type { ContainerSpec, Runtime, RuntimeState } from '../runtime/types.js';
import { type HelperSet, HelperSets } from './helper-sets.js';
import type { BindMount, NetworkAttachment, RootfsDirs } from './drivers.js';
import { AGENT_INIT, AGENT_PATH, AGENT_PIDS_HEADROOM, AGENT_RUN_DIR, SUPERVISOR_PATH } from './agent/agent-setup.js';
import { LiveSandbox } from './live-sandbox.js';
import { runcAccountFilesProblem } from './users.js';
import type { SandboxManager } from './sandbox-manager.js';
import type { ImageConfig, SandboxRecord } from './types.js';

const NO_TRAFFIC = { rx: 0, tx: 0 };

/** The sandbox's /etc/hosts (bind-mounted from its bundle): localhost, its hostname, the network's add-hosts. */
export function hostsFile(spec: SandboxRecord['spec']): string {
  const added = (spec.network?.addHosts ?? []).map((h) => `${h.ip}\t${h.host}\n`).join('');
  return `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${spec.hostname}\n${added}`;
}

export interface RestoreOptions {
  /** When the sandbox expires (undefined: no expiry); the caller carries the time left over a pause. */
  expiresAt?: number;
  /** Its startedAt (default: kept, or now for a new sandbox). */
  startedAt?: number;
  /** How long to wait for the agent to come back (default 10 s). */
  agentWaitMs?: number;
  /**
   * Whether the checkpointed init ran the agent (default: the sandbox's bundle says so, as boot marked
   * it); a sandbox made from another's checkpoint (snapshot, fork) passes what its source had.
   */
  withAgent?: boolean;
  /** The helper set the checkpoint's processes ran (default: the one the sandbox's bundle records); a snapshot passes its own. */
  helpers?: string;
  /** The caller knows no container of this id is left (a pause's teardown ended it): skip the delete. */
  containerGone?: boolean;
}

export interface RestoreResult {
  live: LiveSandbox;
  runtimeState: RuntimeState;
  /** Whether the agent is connected again (false also when the sandbox runs without one). */
  agentReconnected: boolean;
  /** Where the time went, in ms: overlay, network and storage ready; runtime restore; agent back. */
  phases: { prepareMs: number; restoreMs: number; agentMs: number };
}
/** How long a boot waits for the agent to connect before the sandbox is served by the exec path. */
const AGENT_BOOT_WAIT_MS = 10_000;
/** Marks (in the bundle) a sandbox whose init runs the agent, so a restarted daemon waits for it. */
const AGENT_MARKER = 'agent-init';
/** Records (in the bundle) the helper set the sandbox's container runs (src/engine/helper-sets.ts). */
const HELPER_SET_FILE = 'helper-set';

/**
 * A sandbox's container on its runtime: booting it on a prepared rootfs, the in-memory handles of a
 * running one (and the watch on its exit), and halting it again.
 */
export class ContainerBoot {
  /** The exit watch of each running sandbox; aborted when the engine itself ends the container. */
  private readonly watches = new Map<string, AbortController>();
  /** The runtime state of each attached sandbox's current container. */
  private readonly states = new Map<string, RuntimeState | undefined>();

  constructor(private readonly mgr: SandboxManager) {}

  /** Start the container on an already prepared rootfs and mark the sandbox running. */
  async boot(rec: SandboxRecord, image: ImageConfig): Promise<void> {
    const { id, spec } = rec;
    const { net, store } = this.mgr;
    const { dirs, network, storageBinds } = await this.prepare(rec);
    const rt = this.mgr.runtimeFor(spec.runtime);
    await rt.delete(id, dirs.bundle).catch(() => {});
    const marker = join(dirs.bundle, AGENT_MARKER);
    if (this.mgr.helpers.agent) await writeFile(marker, '1\n');
    else await rm(marker, { force: true });
    await writeFile(join(dirs.bundle, HELPER_SET_FILE), `${this.mgr.helpers.id}\n`);
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

  /**
   * What boot and restore share: the overlay mounted (again, after a host reboot), the bundle's hosts
   * and hostname files, and the network namespace with the sandbox's policy (a new one each time: a
   * namespace does not outlive a reboot, and gVisor takes the link's addresses when it restores).
   */
  private async prepare(rec: SandboxRecord): Promise<{ dirs: RootfsDirs; network?: NetworkAttachment; storageBinds: BindMount[] }> {
    const { id, spec } = rec;
    const { rootfs, net } = this.mgr;
    const dirs = rootfs.dirs(id);
    await rootfs.mount(id);
    if (this.mgr.runtimeFor(spec.runtime).capabilities.readsAccountFiles) {
      const problem = await runcAccountFilesProblem(dirs.rootfs);
      if (problem) throw errors.invalid('runtime', `${problem}; use --runtime crun or runsc for this image`);
    }
    await writeFile(join(dirs.bundle, 'hosts'), hostsFile(spec));
    let network: NetworkAttachment | undefined;
    if (spec.network && needsNamespace(spec.network)) {
      if (!net) throw errors.invalid('network', 'this daemon has no network capability');
      network = await net.attach(id, spec.network, dirs);
    }
    await writeFile(join(dirs.bundle, 'hostname'), `${spec.hostname}\n`);
    // Volumes and host mounts (made again at a restore: the same paths the checkpoint was taken with).
    const storageBinds = (await this.mgr.storage?.binds(id, spec).catch(async (e: Error) => {
      await net?.detach(id);
      throw e;
    })) ?? [];
    return { dirs, network, storageBinds };
  }

  /**
   * Start the sandbox's container from the checkpoint image in `checkpointDir` instead of afresh
   * (resume from a pause to disk; a snapshot or a fork). The rootfs at `rec`'s dirs must hold the files
   * the checkpoint was taken with. Network is attached anew under `rec.spec.network`. When the sandbox
   * still has its in-memory handles (a pause kept them, with the agent quiesced) they are re-armed and
   * the agent is expected back; otherwise new handles are made and the agent is awaited. On failure the
   * network and container are given back (the rootfs stays mounted; the caller decides about it).
   */
  async restore(rec: SandboxRecord, image: ImageConfig, checkpointDir: string, opts: RestoreOptions = {}): Promise<RestoreResult> {
    const { id, spec } = rec;
    const { net, store } = this.mgr;
    const rt = this.mgr.runtimeFor(spec.runtime);
    const t0 = Date.now();
    const { dirs, network, storageBinds } = await this.prepare(rec);
    if (!opts.containerGone) await rt.delete(id, dirs.bundle).catch(() => {});
    // The checkpoint's processes run the programs they were started with: the same files again (a
    // sandbox from before sets were recorded, or whose set is gone, gets the current one).
    const recorded = opts.helpers ?? (await this.helperSetOf(id));
    const helpers = this.mgr.helperSets.get(recorded) ?? this.mgr.helpers;
    if (recorded && helpers.id !== recorded) {
      store.addEvent(id, 'restore', `the helper programs its checkpoint ran (set ${recorded}) are gone from the data directory; restoring with this daemon's, which a changed agent or busybox can make fail`);
    }
    // The init of the checkpoint decides: it ran the agent or it did not (the bind mounts must match).
    // Its set has the agent even when this daemon runs without one (--agent off, or an upgrade built none).
    const withAgent = !!helpers.agent && (opts.withAgent ?? this.startedWithAgent(id));
    if (withAgent) await writeFile(join(dirs.bundle, AGENT_MARKER), '1\n');
    let live = this.mgr.live.get(id);
    // Handles kept over a pause: their agent is listened for again before the restore, so that its
    // first redial after the restore connects (no window in which the exec path serves the sandbox).
    await live?.agent?.listenAgain();
    const t1 = Date.now();
    const runtimeState = await rt.restore(this.containerSpec(rec, dirs, network, storageBinds, withAgent, helpers), checkpointDir).catch(async (e: Error) => {
      await live?.agent?.quiesce().catch(() => {});
      await net?.detach(id);
      await this.mgr.storage?.release(id).catch(() => {});
      throw e;
    });
    // Recorded once restored: a failed restore keeps the record it had (a snapshot's set, for a new sandbox).
    await writeFile(join(dirs.bundle, HELPER_SET_FILE), `${helpers.id}\n`);
    const now = Date.now();
    store.update(id, { state: 'running', stateReason: undefined, runtimeState, startedAt: opts.startedAt ?? rec.startedAt ?? now, expiresAt: opts.expiresAt });
    let agentBack = false;
    if (live) {
      this.watch(id, rt, runtimeState, live);
      if (live.agent) agentBack = await live.agent.expectReconnect(opts.agentWaitMs ?? AGENT_BOOT_WAIT_MS);
    } else {
      live = this.attach(id, rt, image, runtimeState);
      if (withAgent) agentBack = await live.waitForAgent(opts.agentWaitMs ?? AGENT_BOOT_WAIT_MS);
    }
    this.mgr.schedule(id, opts.expiresAt);
    if (withAgent && !agentBack && this.mgr.live.get(id) === live) {
      store.addEvent(id, 'agent', `the agent did not reconnect within ${(opts.agentWaitMs ?? AGENT_BOOT_WAIT_MS) / 1000}s of the restore; commands and files use the runtime's exec path until it does`);
    }
    const end = Date.now();
    return { live, runtimeState, agentReconnected: agentBack, phases: { prepareMs: t1 - t0, restoreMs: now - t1, agentMs: end - now } };
  }

  /**
   * Before a checkpoint that ends the container (pause to disk): stop watching its exit, so its end is
   * not taken for a death; `rewatch` undoes this when the checkpoint failed and it runs on.
   */
  rewatch(id: string): void {
    const live = this.mgr.live.get(id);
    const rec = this.mgr.store.get(id);
    if (!live || !rec) return;
    this.watch(id, this.mgr.runtimeFor(rec.runtime), rec.runtimeState, live);
  }

  /** What the runtime is given for a sandbox (a restore from a checkpoint must give the same again). */
  containerSpec(rec: SandboxRecord, dirs: RootfsDirs, network?: NetworkAttachment, storageBinds: BindMount[] = [], withAgent = !!this.mgr.helpers.agent, helpers: HelperSet = this.mgr.helpers): ContainerSpec {
    const { id, spec } = rec;
    const agentBinds = [];
    if (withAgent && helpers.agent) {
      const socketDir = this.mgr.agentSocketDir(id);
      // The bind source must exist before the runtime starts (or restores) the container.
      mkdirSync(socketDir, { recursive: true, mode: 0o700 });
      agentBinds.push(
        { source: helpers.agent.binary, destination: AGENT_PATH, readOnly: true },
        { source: helpers.agent.supervisor, destination: SUPERVISOR_PATH, readOnly: true },
        { source: socketDir, destination: AGENT_RUN_DIR, readOnly: true },
      );
    }
    return {
      id,
      bundleDir: dirs.bundle,
      rootfsDir: dirs.rootfs,
      readOnlyRootfs: spec.readOnlyRootfs,
      hostname: spec.hostname!,
      cpus: spec.cpus,
      memoryBytes: spec.memoryBytes,
      pids: spec.pids + (withAgent ? AGENT_PIDS_HEADROOM : 0),
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
      ...(withAgent && helpers.agent ? { init: AGENT_INIT, hostSockets: true } : {}),
    };
  }

  /** Give a running sandbox its in-memory handles and watch for its exit (also after a daemon restart). */
  attach(id: string, rt: Runtime, image: ImageConfig, state: RuntimeState | undefined): LiveSandbox {
    const { cfg, store, net } = this.mgr;
    const counters = () => net?.counters(id) ?? Promise.resolve(NO_TRAFFIC);
    // Read at each call: a restore gives the same handles a new container.
    this.states.set(id, state);
    const alive = () => rt.alive(id, this.states.get(id));
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
    this.watches.get(id)?.abort();
    this.states.set(id, state);
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

  /** The helper set the sandbox's container runs, as its bundle records it (none for sandboxes from before sets were recorded). */
  helperSetOf(id: string): Promise<string | undefined> {
    return HelperSets.readId(join(this.mgr.rootfs.dirs(id).bundle, HELPER_SET_FILE));
  }

  /** Whether the sandbox's init runs the agent (so a restarted daemon can wait for it to reconnect). */
  startedWithAgent(id: string): boolean {
    return existsSync(join(this.mgr.rootfs.dirs(id).bundle, AGENT_MARKER));
  }

  /** Stop watching: what ends the container from now on is the engine's doing, not a death to report. */
  unwatch(id: string): void {
    this.watches.get(id)?.abort();
    this.watches.delete(id);
    this.states.delete(id);
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
