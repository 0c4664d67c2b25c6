import { CordonError } from '../../errors/registry.js';
import type { BaseTemplate } from '../../image/base-template.js';
import { TemplateLayerDirs } from '../../image/template-build/layer-dirs.js';
import { warmNetworkOf, withWarmPool, type TemplateBase, type TemplateRecord, type TemplateStore } from '../../store/templates.js';
import type { SandboxManager } from '../sandbox-manager.js';
import type { ImageConfig, RootfsSource } from '../types.js';
import type { WarmPools } from './warm-pool.js';

/** What templates need of the OCI image store (a registry image as a template's base). */
export interface TemplateImages {
  pin(ref: string, progress?: (line: string) => void): Promise<{ name: string; id: string; diffIds: string[]; config: ImageConfig }>;
  lowerDirsFor(diffIds: string[], what: string): Promise<string[]>;
}

/** Sources of build-step sandboxes: names a user can never give (the API's template names have no "@"). */
export const TRANSIENT_PREFIX = '@build/';

/**
 * Built templates: their records, the rootfs a sandbox of one gets, removal (refused while in use)
 * and the layers no template, build or sandbox needs any more.
 */
export class TemplateService {
  /** Rootfs sources of running build steps, by transient name. */
  private readonly transient = new Map<string, RootfsSource>();
  /** Layers that running builds hold (made or reused), counted per holder. */
  private readonly pins = new Map<string, number>();
  /** Memory snapshots of builds not recorded in a template yet (kept from collection meanwhile). */
  private readonly pendingSnapshots = new Set<string>();
  mgr?: SandboxManager;
  pools?: WarmPools;

  constructor(
    readonly store: TemplateStore,
    readonly layers: TemplateLayerDirs,
    readonly base: BaseTemplate,
    readonly images: TemplateImages | undefined,
    /** Lower dirs that sandboxes on disk still mount. */
    private readonly lowerDirsInUse: () => Promise<string[]>,
  ) {}

  get(name: string): TemplateRecord {
    const t = this.store.get(name);
    if (!t) throw new CordonError('not_found', `template ${name} does not exist; build it with \`cordon template build ${name}\` or list templates with \`cordon template ls\``, { template: name });
    return t;
  }

  find(name: string): TemplateRecord | undefined {
    return this.store.get(name);
  }

  list(): TemplateRecord[] {
    return this.store.list();
  }

  /** Diff IDs of OCI image layers that templates sit on (the image store's prune keeps them). */
  imageLayersInUse(): string[] {
    return this.store.list().flatMap((t) => (t.base.kind === 'image' ? t.base.diffIds : []));
  }

  /** Image names templates were built FROM (image rm refuses them without force). */
  imagesInUse(): string[] {
    return this.store.list().flatMap((t) => (t.base.kind === 'image' ? [t.base.ref] : []));
  }

  /** A sandbox's rootfs from a template (or a build step's transient source). */
  async resolve(name: string, progress?: (line: string) => void): Promise<RootfsSource> {
    const tr = this.transient.get(name);
    if (tr) return tr;
    const t = this.get(name);
    const start = t.startCmd ? { cmd: t.startCmd, ready: t.readyCmd, readyTimeoutMs: t.readyTimeoutMs } : undefined;
    return { lowerDirs: await this.lowerDirs(t.base, t.layers, `template ${name}`, progress), config: t.config, ref: `template:${name}`, start };
  }

  /** Overlay lower dirs, top-most first, of `layers` (bottom to top) on `base`. */
  async lowerDirs(base: TemplateBase, layers: string[], what: string, progress?: (line: string) => void): Promise<string[]> {
    for (const l of layers) if (!this.layers.has(l)) throw new CordonError('invalid_state', `layer ${l} of ${what} is missing on disk; build the template again`);
    const own = [...layers].reverse().map((l) => this.layers.dir(l));
    if (base.kind === 'base') return [...own, ...(await this.base.ensure(progress)).lowerDirs];
    if (!this.images) throw new CordonError('not_implemented', `${what} sits on image ${base.ref}, and this daemon has no image store`);
    return [...own, ...(await this.images.lowerDirsFor(base.diffIds, what))];
  }

  /** Whether a template (or a build about to record one) keeps this snapshot. */
  holdsSnapshot(id: string): boolean {
    return this.pendingSnapshots.has(id) || this.store.list().some((t) => t.snapshot === id);
  }

  holdSnapshot(id: string): void {
    this.pendingSnapshots.add(id);
  }

  /** A build let go of its snapshot (recorded in the template now, or the build failed). */
  async unholdSnapshot(id: string): Promise<void> {
    this.pendingSnapshots.delete(id);
    await this.mgr?.snapshots.release(id);
  }

  /** Record a built template; what the previous build of the name kept (its snapshot, its pool) is renewed. */
  async record(rec: TemplateRecord, warm?: number): Promise<void> {
    const old = this.store.get(rec.name);
    const size = warm ?? old?.warm;
    // The networked share of the pool stays what it was (at most the new size).
    this.store.put(withWarmPool(rec, size ?? 0, warmNetworkOf(old, size ?? 0)));
    if (old?.snapshot && old.snapshot !== rec.snapshot) await this.mgr?.snapshots.release(old.snapshot);
    if (old || size) await this.pools?.renew(rec.name);
  }

  /**
   * Give a built template another name (an E2B tag, "name:tag"): a second record on the same layers,
   * so removing either name keeps what the other needs.
   */
  alias(source: string, target: string): TemplateRecord {
    const t = this.get(source);
    if (target === 'base') throw new CordonError('invalid_argument', '"base" is the built-in template; choose another name');
    // The alias shares the snapshot (kept while either name holds it), not the warm pool.
    const rec: TemplateRecord = { ...withWarmPool(t, 0, 0), name: target, createdAt: Date.now() };
    this.store.put(rec);
    return rec;
  }

  addTransient(name: string, src: RootfsSource): void {
    this.transient.set(name, src);
  }

  dropTransient(name: string): void {
    this.transient.delete(name);
  }

  pin(id: string): void {
    this.pins.set(id, (this.pins.get(id) ?? 0) + 1);
  }

  unpin(id: string): void {
    const n = (this.pins.get(id) ?? 1) - 1;
    if (n > 0) this.pins.set(id, n);
    else this.pins.delete(id);
  }

  /** Who uses a template: sandboxes made from it, templates built FROM it, snapshots standing on its layers. */
  users(name: string): { sandboxes: string[]; templates: string[]; snapshots: string[] } {
    const sandboxes = (this.mgr?.list() ?? []).filter((r) => r.spec.template === name).map((r) => r.id);
    const templates = this.store.list().filter((t) => t.parentTemplate === name).map((t) => t.name);
    const own = new Set(this.get(name).layers.map((l) => this.layers.dir(l)));
    // A snapshot outlives its source sandbox and restores onto these very layers (its lower dirs).
    // A template's own memory snapshot (shared by its tags) is not a user: it goes with the template.
    const snapshots = this.snapshotRecords()
      .filter((s) => !this.holdsSnapshot(s.id) && (s.spec.template === name || s.lowerDirs.some((d) => own.has(d))))
      .map((s) => s.name ?? s.id);
    return { sandboxes, templates, snapshots };
  }

  private snapshotRecords() {
    return this.mgr?.snapshots.store.list({ includeAuto: true }) ?? [];
  }

  /** Remove a template, refused while sandboxes, other templates or its warm pool use it; frees its unused layers. */
  async remove(name: string): Promise<void> {
    const t = this.get(name);
    const pool = this.pools?.members(name).length ?? 0;
    if (t.warm || pool) throw new CordonError('invalid_state', `template ${name} keeps a warm pool (${t.warm ?? 0} wanted, ${pool} started); empty it first with \`cordon template warm ${name} 0\``, { template: name, warm: t.warm ?? 0, pool });
    const u = this.users(name);
    if (u.sandboxes.length) throw new CordonError('invalid_state', `template ${name} is used by sandbox${u.sandboxes.length > 1 ? 'es' : ''} ${u.sandboxes.slice(0, 5).join(', ')}; remove ${u.sandboxes.length > 1 ? 'them' : 'it'} first`, { template: name, sandboxes: u.sandboxes });
    if (u.templates.length) throw new CordonError('invalid_state', `template ${name} is the FROM of template${u.templates.length > 1 ? 's' : ''} ${u.templates.join(', ')}; remove ${u.templates.length > 1 ? 'them' : 'it'} first`, { template: name, templates: u.templates });
    if (u.snapshots.length) {
      const many = u.snapshots.length > 1;
      throw new CordonError('invalid_state', `template ${name} is under snapshot${many ? 's' : ''} ${u.snapshots.slice(0, 5).join(', ')} (their files stand on its layers); remove ${many ? 'them' : 'it'} first with \`cordon snapshot rm\``, { template: name, snapshots: u.snapshots });
    }
    this.store.delete(name);
    if (t.snapshot) await this.mgr?.snapshots.release(t.snapshot);
    await this.collect();
  }

  /** Delete layers that no template, running build or sandbox on disk uses (with their cache entries). */
  async collect(only?: string[]): Promise<string[]> {
    const used = new Set<string>(this.pins.keys());
    for (const t of this.store.list()) for (const l of t.layers) used.add(l);
    // Layers a snapshot stands on stay, whatever happened to the template (rebuilt under its name, say).
    const mounted = new Set([...(await this.lowerDirsInUse()), ...this.snapshotRecords().flatMap((s) => s.lowerDirs)]);
    const removed: string[] = [];
    for (const id of only ?? [...new Set([...this.store.layerIds(), ...(await this.layers.list())])]) {
      if (used.has(id) || mounted.has(this.layers.dir(id))) continue;
      this.store.deleteLayer(id);
      await this.layers.remove(id);
      removed.push(id);
    }
    return removed;
  }
}
