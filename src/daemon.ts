import { existsSync } from 'node:fs';
import { chmod, mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildServer } from './api/server.js';
import { dataPaths, isLoopback, type DaemonConfig, type RuntimeName } from './config.js';
import { SandboxManager } from './engine/sandbox-manager.js';
import { type Helpers, HelperSets } from './engine/helper-sets.js';
import { BUILT_AGENT, BUILT_SUPERVISOR } from './engine/agent/agent-setup.js';
import { TemplateResolver, type RootfsResolver } from './engine/sources.js';
import { Supervisor } from './engine/supervisor.js';
import { BaseTemplate } from './image/base-template.js';
import { ImageStore } from './image/oci/image-store.js';
import { SandboxRootfs } from './image/sandbox-rootfs.js';
import { prepareCgroups } from './runtime/cgroup/index.js';
import { createRuntimes } from './runtime/registry.js';
import { openDatabase } from './store/db.js';
import { SandboxStore } from './store/sandboxes.js';
import { VERSION } from './version.js';
import { createNetworkService } from './net/wire.js';
import { NamespaceNetworkDriver } from './net/driver.js';
import { hostCpuPressure } from './engine/admission.js';
import { PrometheusTelemetry } from './telemetry/prometheus.js';
import { engineSources } from './telemetry/engine-sources.js';
import { createLogger } from './api/request-log.js';
import { TemplateBuilder } from './engine/templates/template-builder.js';
import { TemplateService, TRANSIENT_PREFIX } from './engine/templates/template-service.js';
import { TemplateFastPathsImpl } from './engine/templates/template-fast.js';
import { WarmPools } from './engine/templates/warm-pool.js';
import { TemplateLayerDirs } from './image/template-build/layer-dirs.js';
import { TemplateStore } from './store/templates.js';
import { TemplateBuildStore } from './store/template-builds.js';
import { BuildRecords } from './engine/templates/build-records.js';
import { VolumeManager } from './engine/volumes.js';
import { SandboxStorage } from './engine/sandbox-storage.js';
import { VolumeStore } from './store/volumes.js';
import { VolumeDisks } from './volume/volume-disk.js';
import { HostMounts } from './volume/host-mounts.js';
import { FileGates, fsgateBinary } from './volume/file-gate.js';
import { BUILT_SPAWNER, Spawner } from './util/spawner.js';
import { useSpawner } from './util/proc.js';
import { fileEventSink } from './engine/file-events.js';
import { S3CredentialStore } from './s3/credentials.js';
import { S3fsMounts } from './s3/s3fs-mounts.js';

const EVENT_PRUNE_EVERY_MS = 60_000;

export interface Daemon {
  app: FastifyInstance;
  mgr: SandboxManager;
  listen(): Promise<string>;
  close(): Promise<void>;
}

export const HELPERS = { busybox: '/bin/busybox', tini: '/usr/bin/tini-static' };
export { BUILT_AGENT, BUILT_SUPERVISOR };
/** How long a restarted daemon waits for the agents of running sandboxes to reconnect before it serves. */
const AGENT_RECONNECT_WAIT_MS = 3_000;

/** The data directory holds the database (secrets, tokens) and the CA key: only root may enter it. */
async function privateDataDir(dir: string, log: (msg: string) => void): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const mode = (await stat(dir)).mode & 0o777;
  if (mode === 0o700) return;
  await chmod(dir, 0o700);
  log(`data directory ${dir} had mode ${mode.toString(8).padStart(4, '0')}; set it to 0700`);
}

/**
 * Wire the layers together: store → runtimes → rootfs/templates → engine → HTTP surfaces.
 * `imageResolver` lets the OCI image store plug in without the daemon knowing its internals.
 */
export async function createDaemon(cfg: DaemonConfig, log: (msg: string) => void = (m) => console.error(m), imageResolver?: RootfsResolver): Promise<Daemon> {
  if (!isLoopback(cfg.listenHost) && !cfg.apiKey) {
    throw new Error(`listening on ${cfg.listenHost} needs an API key: set CORDON_API_KEY or pass --api-key`);
  }
  for (const [name, path] of Object.entries(HELPERS)) {
    if (!existsSync(path)) throw new Error(`${path} is missing (the sandbox ${name}); install it with apt-get install busybox-static tini`);
  }
  const spawner = startSpawner(log);
  const paths = dataPaths(cfg.dataDir, cfg.templatesDir);
  await privateDataDir(cfg.dataDir, log);
  await mkdir(paths.sandboxes, { recursive: true });
  await mkdir(paths.templates, { recursive: true });
  const db = openDatabase(paths.db);
  const store = new SandboxStore(db);
  const cgroups = await prepareCgroups();
  for (const w of cgroups.warnings) log(`cgroups (${cgroups.mode}): ${w}`);
  const runtimes = createRuntimes(cfg);
  const runtimeStatus: Record<string, string> = {};
  for (const [name, rt] of runtimes) {
    runtimeStatus[name] = await rt.check().then(() => 'ok', (e: Error) => e.message);
  }
  const usable = new Map([...runtimes].filter(([n]) => runtimeStatus[n] === 'ok')) as Map<RuntimeName, (typeof runtimes extends Map<RuntimeName, infer R> ? R : never)>;
  if (!usable.has(cfg.defaultRuntime)) throw new Error(`default runtime ${cfg.defaultRuntime} is not usable: ${runtimeStatus[cfg.defaultRuntime]}`);

  // The metrics read the engine at scrape time; the manager exists by the time anyone can scrape.
  let mgrRef: SandboxManager | undefined;
  const telemetry = cfg.metrics === 'on' ? new PrometheusTelemetry(engineSources(() => mgrRef!), { perSandbox: cfg.metricsPerSandbox }) : undefined;
  const base = new BaseTemplate(paths.templates, cfg.debianMirror);
  let templates: TemplateService | undefined;
  const images = new ImageStore(join(cfg.dataDir, 'images'), db, {
    sandboxesDir: paths.sandboxes,
    insecureRegistries: cfg.insecureRegistries,
    layerLimits: { maxBytes: cfg.maxLayerBytes, maxEntries: cfg.maxLayerEntries },
    imagesInUse: () => [...store.list().flatMap((r) => (r.spec.image ? [r.spec.image] : [])), ...(templates?.imagesInUse() ?? [])],
    layersInUse: () => templates?.imageLayersInUse() ?? [],
    telemetry,
  });
  await images.init();
  const net = createNetworkService(cfg, store, telemetry);
  const volumes = new VolumeManager(new VolumeStore(db), new VolumeDisks(paths.volumes), store);
  await volumes.init(log);
  const gates = new FileGates(paths.gates, fsgateBinary(), fileEventSink(store));
  const s3Credentials = new S3CredentialStore(join(cfg.dataDir, 's3', 'credentials'));
  await s3Credentials.init();
  const s3Mounts = new S3fsMounts(join(cfg.dataDir, 's3', 'mounts'), s3Credentials);
  const storage = new SandboxStorage(volumes, await HostMounts.create(paths.mounts, cfg.allowMountRoots, [cfg.dataDir, paths.templates]), gates, s3Mounts);
  const rootfs = new SandboxRootfs(paths.sandboxes);
  const drivers = { rootfs, net: new NamespaceNetworkDriver(net), storage, s3: { credentials: s3Credentials, stateDir: join(cfg.dataDir, 's3', 'state'), mounts: s3Mounts } };
  const templateLayers = new TemplateLayerDirs(join(cfg.dataDir, 'template-layers'));
  await templateLayers.init();
  templates = new TemplateService(new TemplateStore(db), templateLayers, base, images, () => rootfs.lowerDirsInUse());
  const helperSets = new HelperSets(join(cfg.dataDir, 'helpers'));
  const helpers = await helperSets.install({ ...HELPERS, agent: agentBinary(cfg, log) });
  const mgr = new SandboxManager(cfg, store, usable, drivers, new TemplateResolver(base, imageResolver ?? images, templates), helpers, helperSets, telemetry);
  // Sets no sandbox or snapshot records any more go (before anything can restore or install one).
  await helperSets.collect([helpers.id, ...(await mgr.recordedHelperSets())]).catch((e: Error) => log(`removing unused helper programs failed: ${e.message}`));
  templates.mgr = mgr;
  const pools = new WarmPools(templates, log);
  templates.pools = pools;
  mgr.templateFast = new TemplateFastPathsImpl(templates, pools);
  mgr.snapshots.heldBy = (id) => templates!.holdsSnapshot(id);
  mgrRef = mgr;
  mgr.warn = log;
  const supervisor = new Supervisor(mgr, log);
  await supervisor.reconcile();
  // Step sandboxes of builds this daemon was running when it stopped: their build is gone.
  for (const r of mgr.list().filter((x) => x.labels['cordon.build'] && x.spec.template?.startsWith(TRANSIENT_PREFIX))) {
    await mgr.remove(r.id, true).catch((e: Error) => log(`removing build sandbox ${r.id} left by an interrupted build failed: ${e.message}`));
  }
  // Build records: those that were running when the daemon stopped read as failed from now on.
  const builds = new BuildRecords(new TemplateBuildStore(db));
  const interrupted = builds.recoverInterrupted();
  if (interrupted) log(`${interrupted} template build(s) were interrupted by the restart; they report an error`);
  // Pool members from before the restart go; the pools refill in the background.
  await pools.restart();
  // Processes started through the agents keep running across a restart; let the agents re-attach them first.
  await Promise.all([...mgr.live.entries()].filter(([id]) => mgr.boot.startedWithAgent(id)).map(([, live]) => live.waitForAgent(AGENT_RECONNECT_WAIT_MS)));
  mgr.metrics.start();
  mgr.idle?.start();
  if (cfg.maxCpuPressure > 0 && (await hostCpuPressure()) === undefined) {
    log('this host has no CPU pressure information (/proc/pressure/cpu); admission judges only memory and sandbox counts');
  }
  const pruneTimer = startEventRetention(store, cfg, log);

  let baseError: string | undefined;
  if (!base.isBuilt()) {
    log('template base is not built yet; building it now (about a minute)');
    base.ensure((l) => log(`[base] ${l}`)).catch((e: Error) => {
      baseError = e.message;
      log(`building template base failed: ${e.message}`);
    });
  }

  const app = await buildServer({
    cfg,
    mgr,
    version: VERSION,
    images,
    net,
    metrics: telemetry,
    logger: cfg.requestLog === 'on' ? createLogger(cfg.logLevel) : undefined,
    templates: { service: templates, builder: new TemplateBuilder(templates), builds, pools },
    volumes,
    readiness: () => {
      if (base.isBuilt()) return { ready: true, runtimes: runtimeStatus };
      return { ready: false, reason: baseError ? `template base failed to build: ${baseError}` : 'building template base', runtimes: runtimeStatus };
    },
  });

  return {
    app,
    mgr,
    async listen() {
      return app.listen({ host: cfg.listenHost, port: cfg.listenPort });
    },
    async close() {
      supervisor.stop();
      pools.close();
      mgr.close();
      mgr.metrics.stop();
      mgr.idle?.stop();
      clearInterval(pruneTimer);
      await app.close();
      // Containers that pauses to disk left ending: their namespaces and mounts go before the network closes.
      await mgr.pauses.settleAll();
      await net.close().catch(() => {});
      builds.close();
      mgr.detachAll();
      store.flush();
      db.close();
      useSpawner(undefined);
      spawner?.stop();
    },
  };
}

/** The agent binary to inject and its supervisor, or undefined (agent off, or not built: the exec path serves every sandbox). */
function agentBinary(cfg: DaemonConfig, log: (msg: string) => void): Helpers['agent'] {
  if (cfg.agent === 'off') return undefined;
  const binary = cfg.agentBinary ?? BUILT_AGENT;
  for (const path of [binary, BUILT_SUPERVISOR]) {
    if (existsSync(path)) continue;
    log(`the sandbox agent ${path === binary ? '' : 'supervisor '}${path} is missing (build it with npm run build, which needs golang-1.23-go and musl-tools); sandboxes run without the agent, through the runtime's exec path`);
    return undefined;
  }
  return { binary, supervisor: BUILT_SUPERVISOR };
}

/**
 * The daemon's process starter, through which helper programs start from here on; undefined (they
 * start from the daemon itself, each blocking it for a fork) when it was not built, or with
 * CORDON_SPAWNER=off (to compare the two).
 */
function startSpawner(log: (msg: string) => void): Spawner | undefined {
  if (process.env.CORDON_SPAWNER === 'off') return undefined;
  const spawner = Spawner.start(BUILT_SPAWNER, log);
  if (!spawner) log(`the process starter ${BUILT_SPAWNER} is missing or cannot be started (npm run build makes it, with golang-1.23-go); the daemon starts helper programs itself, each blocking it for as long as a fork of it takes`);
  useSpawner(spawner);
  return spawner;
}

/** Prune the event log to the configured retention now and then every minute. */
function startEventRetention(store: SandboxStore, cfg: DaemonConfig, log: (msg: string) => void): NodeJS.Timeout {
  let running = false;
  const prune = () => {
    if (running || (!cfg.eventRetention && !cfg.eventMaxAgeMs)) return;
    running = true;
    store
      .pruneEvents(cfg.eventRetention, cfg.eventMaxAgeMs)
      .catch((e: Error) => log(`pruning events failed: ${e.message}`))
      .finally(() => (running = false));
  };
  prune();
  const timer = setInterval(prune, EVENT_PRUNE_EVERY_MS);
  timer.unref();
  return timer;
}
