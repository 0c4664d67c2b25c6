import { posix } from 'node:path';
import { CordonError } from '../errors/registry.js';
import type { FileGates } from '../volume/file-gate.js';
import { planGates, type FileRule } from '../volume/file-rules.js';
import type { BindSpec, HostMount, HostMounts } from '../volume/host-mounts.js';
import type { TmpfsMount } from './types.js';
import type { VolumeManager, VolumeMount } from './volumes.js';
import type { S3fsMounts } from '../s3/s3fs-mounts.js';
import type { S3SyncSpec } from '../s3/sync-spec.js';

/** Paths a volume or host mount may not cover: the runtime's own mounts and cordon's helpers. */
const RESERVED = ['/proc', '/sys', '/dev', '/.cordon', '/etc/hosts', '/etc/hostname', '/etc/resolv.conf'];

/** A mount target: absolute, no `..`, NUL or `/` itself, nothing the runtime or cordon mounts. */
export function checkTarget(path: string, field: string): string {
  if (typeof path !== 'string' || !path.startsWith('/') || path.includes('\0') || path.length > 4096 || path.split('/').includes('..')) {
    throw new CordonError('invalid_argument', `${field}: ${String(path)} must be an absolute path without ".." or NUL`, { field });
  }
  const p = posix.normalize(path).replace(/\/+$/, '');
  if (!p) throw new CordonError('invalid_argument', `${field}: cannot mount over / itself`, { field });
  for (const r of RESERVED) {
    if (p === r || p.startsWith(`${r}/`)) throw new CordonError('invalid_argument', `${field}: ${p} is under ${r}, which the runtime or cordon mounts; pick another path`, { field });
  }
  return p;
}

/** Every target once across volumes, host mounts and tmpfs mounts. */
export function checkDistinctTargets(volumes: VolumeMount[], mounts: HostMount[], tmpfs: TmpfsMount[], s3Mounts: string[] = []): void {
  const seen = new Set<string>();
  for (const t of [...volumes.map((v) => v.path), ...mounts.map((m) => m.target), ...tmpfs.map((t) => t.path), ...s3Mounts]) {
    if (seen.has(t)) throw new CordonError('invalid_argument', `mounts: ${t} is the target of more than one mount`, { field: 'mounts' });
    seen.add(t);
  }
}

/**
 * What a sandbox's storage adds to its container: volume binds and host mounts. Prepared at every boot
 * (a volume removed meanwhile, or a host directory gone, fails the start with the reason).
 */
export class SandboxStorage {
  constructor(
    readonly volumes: VolumeManager,
    readonly hostMounts: HostMounts,
    readonly gates: FileGates,
    /** S3 prefixes mounted with s3fs (the mount mode of an S3 sync); absent without S3 support. */
    readonly s3Mounts?: S3fsMounts,
  ) {}

  /**
   * The binds of volumes, host mounts and S3 mounts; a volume or host mount some file rule or events
   * path reaches is served through its file gate (the runtime binds the gate's mount point instead).
   */
  async binds(id: string, spec: { volumes?: VolumeMount[]; mounts?: HostMount[]; fileRules?: FileRule[]; fileEvents?: string[]; s3Sync?: S3SyncSpec[] }): Promise<BindSpec[]> {
    const out: (BindSpec & { key: string })[] = [];
    for (const [i, v] of (spec.volumes ?? []).entries()) out.push({ source: await this.volumes.bindSource(v), destination: v.path, readOnly: v.readOnly, key: `v${i}` });
    for (const [i, b] of (await this.hostMounts.prepare(id, spec.mounts ?? [])).entries()) out.push({ ...b, key: `m${i}` });
    if (spec.fileRules?.length || spec.fileEvents?.length) {
      const plan = planGates(out.map((b) => b.destination), spec.fileRules ?? [], spec.fileEvents ?? []);
      try {
        for (const b of out) {
          const p = plan.get(b.destination);
          if (p) b.source = await this.gates.start(id, b.key, { source: b.source, prefix: b.destination, rules: p.rules, events: p.events });
        }
      } catch (e) {
        await this.release(id).catch(() => {});
        throw e;
      }
    }
    const binds: BindSpec[] = out.map(({ key: _, ...b }) => b);
    if (spec.s3Sync?.some((s) => s.mode === 'mount')) {
      if (!this.s3Mounts) throw new Error("this daemon has no S3 support for the sandbox's S3 mount");
      binds.push(...(await this.s3Mounts.prepare(id, spec.s3Sync)));
    }
    return binds;
  }

  /** After a daemon restart: the file gates of a sandbox that kept running report to this daemon again. */
  adopt(id: string): Promise<void> {
    return this.gates.adopt(id);
  }

  /** Stop file gates, unmount S3 mounts and host mounts (stop); overlay writes stay. */
  async release(id: string): Promise<void> {
    await this.gates.stop(id);
    await this.s3Mounts?.release(id);
    await this.hostMounts.release(id);
  }

  /** Sandboxes with file-gate or mount state on disk (the supervisor removes those without a record). */
  async ids(): Promise<string[]> {
    return [...new Set([...(await this.gates.ids()), ...(await this.hostMounts.ids()), ...((await this.s3Mounts?.ids()) ?? [])])];
  }

  /** Stop file gates, unmount and delete what the sandbox's mounts kept (removal). */
  async destroy(id: string): Promise<void> {
    await this.gates.stop(id);
    await this.s3Mounts?.destroy(id);
    await this.hostMounts.destroy(id);
  }
}
