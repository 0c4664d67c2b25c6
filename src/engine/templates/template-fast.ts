import type { RuntimeName } from '../../config.js';
import { needsNamespace } from '../../net/types.js';
import type { CreateInput, TemplateFastPaths } from '../sandbox-create.js';
import { POOL_LABEL } from '../sandbox-manager.js';
import type { TemplateService } from './template-service.js';
import type { WarmPools } from './warm-pool.js';

/**
 * Request fields a started sandbox (a memory snapshot or a pool member) already has fixed: a create
 * that sets one of them needs a fresh boot. Empty lists count as unset (the API sends them).
 */
const FIXED_AT_START: (keyof CreateInput)[] = [
  'image', 'pullPolicy', 'cmd', 'entrypoint', 'user', 'workdir', 'cpus', 'memoryBytes', 'pids', 'diskBytes',
  'readOnlyRootfs', 'tmpfs', 'volumes', 'mounts', 'hostname', 'noNewPrivileges',
];

/** The first field of the request a started sandbox cannot honour, or undefined. */
export function fixedField(input: CreateInput): string | undefined {
  for (const k of FIXED_AT_START) {
    const v = input[k];
    if (v === undefined || v === false || (Array.isArray(v) && v.length === 0)) continue;
    return k;
  }
  return undefined;
}

/** Why a started sandbox without a network namespace cannot serve the request's network, or undefined. */
export function networkMismatch(input: CreateInput, hasNamespace: boolean): string | undefined {
  if (needsNamespace(input.network) === hasNamespace) return undefined;
  return hasNamespace ? 'the request has no network; the started sandbox has one' : 'the request has a network policy; a started sandbox gets its network namespace only when it boots';
}

/** The engine's fast paths to a template's sandbox: its warm pool first, then its memory snapshot. */
export class TemplateFastPathsImpl implements TemplateFastPaths {
  constructor(
    private readonly svc: TemplateService,
    private readonly pools: WarmPools,
  ) {}

  isPoolMember(input: CreateInput): boolean {
    return input.labels?.[POOL_LABEL] !== undefined;
  }

  claim(input: CreateInput, runtime: RuntimeName) {
    return this.pools.claim(input, runtime);
  }

  evictIdle(): Promise<boolean> {
    return this.pools.evictIdle();
  }

  poolStats() {
    return this.svc
      .list()
      .filter((t) => t.warm || this.pools.members(t.name).length)
      .map((t) => {
        const v = this.pools.view(t);
        return { template: t.name, ready: v.ready, starting: v.starting, claims: v.claims, misses: v.misses };
      });
  }

  snapshotFor(input: CreateInput, runtime: RuntimeName) {
    const t = input.template ? this.svc.find(input.template) : undefined;
    if (!t?.snapshot) return {};
    const snaps = this.svc.mgr!.snapshots;
    const snap = snaps.store.get(t.snapshot);
    if (!snap || snap.kind !== 'memory') return { why: 'its snapshot is missing; build the template again' };
    if (snap.runtime !== runtime) return { why: `the snapshot is of runtime ${snap.runtime}, the request asked for ${runtime}` };
    const field = fixedField(input);
    if (field) return { why: `the request sets ${field}, which a memory snapshot has fixed` };
    const net = networkMismatch(input, needsNamespace(snap.spec.network));
    if (net) return { why: net };
    return { snap };
  }
}
