import { randomBytes } from 'node:crypto';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CordonError } from '../../errors/registry.js';
import type { RootfsResolver } from '../../engine/sources.js';
import type { ImageConfig, RootfsSource } from '../../engine/types.js';
import type { DB } from '../../store/db.js';
import { dockerConfigCredentials, type Credentials } from './auth.js';
import { ImageDb, type ImageRecord } from './image-db.js';
import { importDir, importFile } from './importer.js';
import type { LayerLimits } from './layer-limits.js';
import { LayerStore } from './layer-store.js';
import { configSchema, imageConfigOf, parseDoc } from './manifest.js';
import { Progress, type PullListener } from './progress.js';
import { pullImage } from './puller.js';
import { formatReference, isDigest, parseReference } from './reference.js';
import { RwLock } from './rw-lock.js';
import { lowerDirsOfSandboxes } from '../sandbox-rootfs.js';
import type { Telemetry } from '../../telemetry/telemetry.js';

export type PullPolicy = 'missing' | 'always' | 'never';

export interface ImageStoreOptions {
  /** Counts pulls by outcome (the daemon's metrics). */
  telemetry?: Telemetry;
  /** Registries allowed over plain HTTP besides loopback ones. */
  insecureRegistries?: string[];
  /** Where sandboxes keep their layers.json, to see which layers they still use. */
  sandboxesDir: string;
  /** Image names that sandbox records still refer to (rm refuses those without force). */
  imagesInUse?: () => string[];
  dockerConfig?: string;
  /** How large a layer may be once decompressed, and how many entries it may hold. */
  layerLimits?: LayerLimits;
  /** Diff IDs that built templates sit on (prune keeps them). */
  layersInUse?: () => string[];
}

/** A layer handed to a sandbox stays protected from prune this long, until its layers.json is on disk. */
const LEASE_MS = 10 * 60_000;

/**
 * The OCI image store: pull, import, list, inspect, remove, prune; and the rootfs resolver that turns
 * an image reference into overlay lower dirs plus the config Docker would apply.
 */
export class ImageStore implements RootfsResolver {
  readonly layers: LayerStore;
  private readonly db: ImageDb;
  private readonly lock = new RwLock();
  private readonly pulls = new Map<string, { done: Promise<ImageRecord>; listeners: Set<PullListener> }>();
  private readonly leases = new Map<string, number>();

  constructor(readonly root: string, db: DB, private readonly opts: ImageStoreOptions) {
    this.layers = new LayerStore(root, opts.layerLimits);
    this.db = new ImageDb(db);
  }

  init(): Promise<void> {
    return this.layers.init();
  }

  /** Find an image by name (normalised like Docker), full or short ID, or manifest digest. */
  find(ref: string): ImageRecord | undefined {
    const direct = this.db.get(ref);
    if (direct) return direct;
    const hex = /^(sha256:)?[a-f0-9]{6,64}$/.test(ref);
    if (hex) {
      const hits = this.db.byId(ref);
      const ids = new Set(hits.map((h) => h.id));
      if (ids.size > 1) throw new CordonError('invalid_argument', `image ID ${ref} is ambiguous; give more digits`);
      if (hits.length) return hits[0];
      if (ref.startsWith('sha256:')) return undefined;
    }
    try {
      return this.db.get(formatReference(parseReference(ref)));
    } catch (e) {
      if (hex) return undefined;
      throw e;
    }
  }

  get(ref: string): ImageRecord {
    const img = this.find(ref);
    if (!img) throw new CordonError('not_found', `image ${ref} is not in the store; pull it with \`cordon image pull ${ref}\` or list images with \`cordon image ls\``, { image: ref });
    return img;
  }

  list(): ImageRecord[] {
    return this.db.list();
  }

  /** Pull an image; a second pull of the same name while one runs joins it instead of fetching again. */
  async pull(refStr: string, opts: { credentials?: Credentials; onEvent?: PullListener } = {}): Promise<ImageRecord> {
    const ref = parseReference(refStr);
    const name = formatReference(ref);
    let p = this.pulls.get(name);
    if (!p) {
      const listeners = new Set<PullListener>();
      const emit: PullListener = (ev) => listeners.forEach((l) => l(ev));
      const done = this.lock
        .read(async () => {
          const credentials = opts.credentials ?? (await dockerConfigCredentials(ref.registry, this.opts.dockerConfig));
          const img = await pullImage(ref, { layers: this.layers, insecure: this.opts.insecureRegistries ?? [], credentials, progress: new Progress(emit) });
          this.db.put(img);
          return img;
        })
        .then(
          (img) => (this.opts.telemetry?.imagePull(true), img),
          (e) => {
            this.opts.telemetry?.imagePull(false);
            throw e;
          },
        )
        .finally(() => this.pulls.delete(name));
      p = { done, listeners };
      this.pulls.set(name, p);
    }
    if (opts.onEvent) p.listeners.add(opts.onEvent);
    try {
      return await p.done;
    } finally {
      if (opts.onEvent) p.listeners.delete(opts.onEvent);
    }
  }

  /** Import a docker save archive or OCI layout (file or directory) from the daemon's filesystem. */
  async import(path: string, opts: { name?: string; onEvent?: PullListener } = {}): Promise<ImageRecord[]> {
    const st = await stat(path).catch(() => {
      throw new CordonError('not_found', `${path} does not exist on the daemon's host`);
    });
    if (!st.isFile() && !st.isDirectory()) throw new CordonError('invalid_argument', `${path} is neither a file nor a directory; give an archive file or an OCI layout directory`);
    const progress = new Progress(opts.onEvent);
    const work = join(this.layers.tmpDir, `import-${randomBytes(6).toString('hex')}`);
    return this.lock.read(async () => {
      try {
        const imgs = st.isDirectory() ? await importDir(path, { layers: this.layers, progress, name: opts.name }) : await importFile(path, work, { layers: this.layers, progress, name: opts.name });
        for (const img of imgs) this.db.put(img);
        return imgs;
      } finally {
        await rm(work, { recursive: true, force: true });
      }
    });
  }

  /** Untag (remove) an image by name, or every name of an ID. Layers stay until prune. */
  remove(ref: string, force = false): ImageRecord[] {
    const img = this.get(ref);
    const byId = /^(sha256:)?[a-f0-9]{6,64}$/.test(ref) && !this.db.get(ref) && img.name !== ref;
    const doomed = byId ? this.list().filter((i) => i.id === img.id) : [img];
    if (!force) {
      const used = new Set(this.opts.imagesInUse?.() ?? []);
      const busy = doomed.filter((d) => used.has(d.name) || [...used].some((u) => this.safeFind(u)?.id === d.id && this.safeFind(u)?.name === d.name));
      if (busy.length) throw new CordonError('invalid_state', `image ${busy[0].name} is used by a sandbox; remove the sandbox first or force the removal`, { image: busy[0].name });
    }
    for (const d of doomed) this.db.delete(d.name);
    return doomed;
  }

  private safeFind(ref: string): ImageRecord | undefined {
    try {
      return this.find(ref);
    } catch {
      return undefined;
    }
  }

  /** Remove layers that no image and no sandbox uses. Waits for running pulls and creates. */
  async prune(): Promise<{ removed: string[]; kept: number }> {
    return this.lock.write(async () => {
      const used = new Set<string>();
      for (const img of this.list()) for (const l of img.layers) used.add(l.diffId);
      for (const d of this.opts.layersInUse?.() ?? []) used.add(d);
      const now = Date.now();
      for (const [d, t] of this.leases) (t > now ? used.add(d) : this.leases.delete(d));
      for (const short of await this.sandboxShortLinks()) used.add(short);
      const removed: string[] = [];
      let kept = 0;
      for (const diffId of await this.layers.list()) {
        if (used.has(diffId) || used.has(this.layers.shortPath(diffId))) kept++;
        else {
          await this.layers.remove(diffId);
          removed.push(diffId);
        }
      }
      return { removed, kept };
    });
  }

  /** Lower dirs every sandbox on disk mounts (from its layers.json). */
  private sandboxShortLinks(): Promise<string[]> {
    // Sandboxes still being created have no layers.json yet; leases cover those.
    return lowerDirsOfSandboxes(this.opts.sandboxesDir);
  }

  /** An image for a template build: found (or pulled when missing) and pinned by its layers. */
  async pin(ref: string, progress?: (line: string) => void): Promise<{ name: string; id: string; diffIds: string[]; config: ImageConfig }> {
    const img = this.find(ref) ?? (await this.pull(ref, { onEvent: (ev) => ev.type === 'status' && progress?.(ev.message) }));
    const config = imageConfigOf(parseDoc(configSchema, Buffer.from(img.config), `config of ${img.name}`));
    if (!img.layers.length) throw new CordonError('invalid_argument', `image ${img.name} has no layers`);
    return { name: img.name, id: img.id, diffIds: img.layers.map((l) => l.diffId), config };
  }

  /** Overlay lower dirs (top-most first) of layers pinned earlier; they are leased like a create's. */
  async lowerDirsFor(diffIds: string[], what: string): Promise<string[]> {
    return this.lock.read(async () => {
      for (const d of diffIds) {
        if (!this.layers.has(d)) throw new CordonError('invalid_state', `layer ${d} of ${what} is missing from the image store; build it again`);
        this.leases.set(d, Date.now() + LEASE_MS);
      }
      return diffIds.map((d) => this.layers.shortPath(d)).reverse();
    });
  }

  /** RootfsResolver: the image's layers (pulled if missing, per policy) and config for a new sandbox. */
  async resolve(req: { template?: string; image?: string; pullPolicy?: PullPolicy }, progress?: (line: string) => void): Promise<RootfsSource> {
    const ref = req.image!;
    const policy = req.pullPolicy ?? 'missing';
    let img = policy === 'always' ? undefined : this.find(ref);
    if (!img) {
      if (policy === 'never') throw new CordonError('not_found', `image ${ref} is not in the store and the pull policy is "never"; pull it first`, { image: ref });
      if (isDigest(ref)) throw new CordonError('not_found', `image ${ref} is not in the store`);
      img = await this.pull(ref, { onEvent: (ev) => ev.type === 'status' && progress?.(ev.message) });
    }
    const found = img;
    return this.lock.read(async () => {
      for (const l of found.layers) {
        if (!this.layers.has(l.diffId)) throw new CordonError('invalid_state', `layer ${l.diffId} of ${found.name} is missing from the store; pull the image again`);
        this.leases.set(l.diffId, Date.now() + LEASE_MS);
      }
      const config = imageConfigOf(parseDoc(configSchema, Buffer.from(found.config), `config of ${found.name}`));
      const lowerDirs = found.layers.map((l) => this.layers.shortPath(l.diffId)).reverse();
      if (!lowerDirs.length) throw new CordonError('invalid_argument', `image ${found.name} has no layers`);
      return { lowerDirs, config, ref: found.name };
    });
  }
}
