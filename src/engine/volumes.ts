import { timingSafeEqual } from 'node:crypto';
import { CordonError } from '../errors/registry.js';
import type { SandboxStore } from '../store/sandboxes.js';
import type { VolumeRecord, VolumeStore } from '../store/volumes.js';
import { newId, newToken } from '../util/ids.js';
import { FilesInRoot } from '../volume/files-in-root.js';
import { DEFAULT_VOLUME_BYTES, MIN_VOLUME_BYTES, type VolumeDisks } from '../volume/volume-disk.js';
import { KeyedLock } from './keyed-lock.js';
import type { SandboxRecord } from './types.js';

export const VOLUME_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const MAX_VOLUME_BYTES = 16 * 1024 ** 4;

/** A volume a sandbox mounts, as kept in its spec. */
export interface VolumeMount {
  volumeId: string;
  /** The name when the sandbox was created (for display; the id is what counts). */
  name: string;
  path: string;
  readOnly: boolean;
}

export interface VolumeInfo extends VolumeRecord {
  usedBytes?: number;
  /** Sandboxes (any state) whose spec mounts it. */
  mountedBy: string[];
}

/**
 * Named volumes: create, list, inspect, remove (refused while a sandbox mounts it unless forced), and
 * host-side access to their files. They outlive sandboxes and daemon restarts (rows in SQLite, files in
 * a loop-mounted image each).
 */
export class VolumeManager {
  private readonly lock = new KeyedLock();

  constructor(
    private readonly store: VolumeStore,
    private readonly disks: VolumeDisks,
    private readonly sandboxes: SandboxStore,
  ) {}

  /** At daemon start: mount every volume (a host reboot unmounted them). */
  async init(log: (msg: string) => void): Promise<void> {
    for (const v of this.store.list()) {
      await this.disks.mount(v.id).catch((e: Error) => log(`volume ${v.name}: mounting it failed: ${e.message}`));
    }
  }

  async create(name: string, sizeBytes = DEFAULT_VOLUME_BYTES, labels: Record<string, string> = {}): Promise<VolumeInfo> {
    if (!VOLUME_NAME_RE.test(name)) throw new CordonError('invalid_argument', `name: "${name}" must be 1-63 letters, digits, _ . - starting with a letter or digit`, { field: 'name' });
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < MIN_VOLUME_BYTES || sizeBytes > MAX_VOLUME_BYTES) {
      throw new CordonError('invalid_argument', `size: must be from ${MIN_VOLUME_BYTES / 1024 / 1024} MiB to 16 TiB, e.g. 1g`, { field: 'size' });
    }
    return this.lock.run(`name:${name}`, async () => {
      if (this.store.find(name)) throw new CordonError('already_exists', `volume ${name} already exists; pick another name or remove it with cordon volume rm ${name}`, { volume: name });
      const rec: VolumeRecord = { id: `vol-${newId(16)}`, name, sizeBytes, token: newToken(), labels, createdAt: Date.now() };
      try {
        await this.disks.create(rec.id, sizeBytes);
        this.store.insert(rec);
      } catch (e) {
        await this.disks.discard(rec.id);
        throw e instanceof CordonError ? e : new CordonError('internal', `creating volume ${name} failed and was undone: ${(e as Error).message}`);
      }
      return this.info(rec);
    });
  }

  /** By id or name; 404 naming how to list them. */
  get(ref: string): VolumeRecord {
    const v = this.store.find(ref);
    if (!v) throw new CordonError('not_found', `volume ${ref} does not exist; list volumes with cordon volume ls`, { volume: ref });
    return v;
  }

  async inspect(ref: string): Promise<VolumeInfo> {
    return this.info(this.get(ref));
  }

  async list(): Promise<VolumeInfo[]> {
    return Promise.all(this.store.list().map((v) => this.info(v)));
  }

  private async info(v: VolumeRecord): Promise<VolumeInfo> {
    const usage = await this.disks.usage(v.id);
    return { ...v, usedBytes: usage?.usedBytes, mountedBy: this.users(v.id).map((r) => r.id) };
  }

  private users(id: string): SandboxRecord[] {
    return this.sandboxes.list().filter((r) => r.spec.volumes?.some((m) => m.volumeId === id));
  }

  /** Remove; refused while any sandbox mounts it, unless forced (those sandboxes keep their view until they stop). */
  async remove(ref: string, force = false): Promise<void> {
    const v = this.get(ref);
    await this.lock.run(`name:${v.name}`, async () => {
      const users = this.users(v.id);
      if (users.length && !force) {
        throw new CordonError('invalid_state', `volume ${v.name} is mounted by sandbox${users.length > 1 ? 'es' : ''} ${users.map((u) => u.id).join(', ')}; remove ${users.length > 1 ? 'them' : 'it'} first, or force (cordon volume rm -f)`, { volume: v.name, sandboxes: users.map((u) => u.id) });
      }
      await this.disks.destroy(v.id);
      this.store.delete(v.id);
    });
  }

  /** Resolve the volumes a create asks for (by name or id) into mounts kept with the sandbox. */
  resolveMounts(req: { name: string; path: string; readOnly?: boolean }[]): VolumeMount[] {
    const seen = new Set<string>();
    return req.map((m) => {
      const v = this.get(m.name);
      if (seen.has(m.path)) throw new CordonError('invalid_argument', `volumes: ${m.path} is mounted twice`, { field: 'volumes' });
      seen.add(m.path);
      return { volumeId: v.id, name: v.name, path: m.path, readOnly: !!m.readOnly };
    });
  }

  /** The host directory a booting sandbox binds for a mount; a volume removed meanwhile fails the boot. */
  async bindSource(m: VolumeMount): Promise<string> {
    const v = this.store.find(m.volumeId);
    if (!v) throw new CordonError('not_found', `volume ${m.name} (${m.volumeId}) mounted at ${m.path} was removed; this sandbox cannot start without it`, { volume: m.name });
    await this.disks.mount(v.id);
    return this.disks.paths(v.id).data;
  }

  /** The volume's files, as the host may touch them (no links followed, no FIFOs opened). */
  async files(ref: string): Promise<FilesInRoot> {
    const v = this.get(ref);
    await this.disks.mount(v.id);
    return new FilesInRoot(this.disks.paths(v.id).data);
  }

  /** The volume the E2B content API's Bearer token opens; 401 for any other token. */
  byToken(ref: string, token: string | undefined): VolumeRecord {
    const v = this.store.find(ref);
    const ok = !!v && !!token && token.length === v.token.length && timingSafeEqual(Buffer.from(token), Buffer.from(v.token));
    if (!ok) throw new CordonError('unauthenticated', `missing or wrong volume token for volume ${ref}; get it from GET /volumes/${ref}`);
    return v!;
  }
}
