import type { RuntimeName } from '../../config.js';
import { CordonError } from '../../errors/registry.js';
import { warmNetworkOf, withWarmPool, type TemplateRecord } from '../../store/templates.js';
import type { CreateInput } from '../sandbox-create.js';
import { POOL_LABEL } from '../sandbox-manager.js';
import type { SandboxRecord } from '../types.js';
import { fixedField } from './template-fast.js';
import { applyClaimNetwork, claimEnv, claimNetworkMismatch, kindOf, memberNetwork, type MemberKind } from './claim-network.js';
import type { TemplateService } from './template-service.js';

/** The most sandboxes one template's pool may keep (the daemon's sandbox cap bounds it further). */
export const MAX_WARM = 64;
/** States of a member that is, or is becoming, a started sandbox. */
const ALIVE = new Set(['creating', 'restoring', 'running']);
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 30_000;
/** How often a refill held back (users' creates waiting, the sandbox cap) looks again. */
const HOLD_BACK_MS = 200;
const CAP_WAIT_MS = 2_000;
/**
 * A refill waits this long after a claim: a pool create (a runsc restore) takes most of a core for a
 * few hundred ms, and the claimer's first commands, which usually follow at once, go first.
 */
const REFILL_AFTER_CLAIM_MS = 300;
/** Deadline of the one command a new member runs before it counts as ready (LiveSandbox.warmUp). */
const WARM_UP_MS = 10_000;

export interface PoolView {
  size: number;
  /** How many of the `size` members wait in a deny-all network namespace (for creates with a network policy). */
  network: number;
  ready: number;
  /** Of the ready members, those with a network namespace. */
  network_ready: number;
  starting: number;
  claims: number;
  misses: number;
  last_error: string | null;
  /** Ids of the pool's sandboxes (they are not listed among the user's). */
  members: string[];
}

/**
 * Warm pools: per template, N started sandboxes nobody has claimed yet (marked with POOL_LABEL, hidden
 * from user lists, counted by admission). A create of the template claims one and the pool refills in
 * the background, one pool create at a time for the whole daemon, never while users' creates wait for
 * a slot and never past the sandbox cap (one place stays free for users; at the cap a user's create
 * evicts an idle member).
 */
export class WarmPools {
  private readonly loops = new Map<string, Promise<void>>();
  private readonly again = new Set<string>();
  private readonly claiming = new Set<string>();
  private readonly counts = new Map<string, { claims: number; misses: number; lastError?: string }>();
  /**
   * Members whose create has returned. A restored member is `running` before its create is done (the
   * agent reconnecting, events): a claim of it waits for the rest under the sandbox's lock, so only these
   * count as ready, and claims take them first.
   */
  private readonly done = new Set<string>();
  /** One pool create at a time, across templates. */
  private serial: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly svc: TemplateService,
    private readonly log: (msg: string) => void = () => {},
  ) {}

  private get mgr() {
    return this.svc.mgr!;
  }

  /** Pool members (every state) of one template, or of all. */
  members(name?: string): SandboxRecord[] {
    return this.mgr.store.withLabel(POOL_LABEL, name);
  }

  /** Running members of a kind nobody is claiming, those whose create has returned first. */
  private idle(name?: string, kind?: MemberKind): SandboxRecord[] {
    const idle = this.members(name).filter((r) => r.state === 'running' && !this.claiming.has(r.id) && (kind === undefined || kindOf(r.spec.network) === kind));
    return [...idle.filter((r) => this.done.has(r.id)), ...idle.filter((r) => !this.done.has(r.id))];
  }

  /** How many members of each kind the template wants. */
  private wanted(name: string): Record<MemberKind, number> {
    const t = this.svc.find(name);
    const net = warmNetworkOf(t);
    return { plain: (t?.warm ?? 0) - net, net };
  }

  private count(name: string) {
    let c = this.counts.get(name);
    if (!c) this.counts.set(name, (c = { claims: 0, misses: 0 }));
    return c;
  }

  view(t: TemplateRecord): PoolView {
    const m = this.members(t.name);
    const c = this.count(t.name);
    const ready = m.filter((r) => r.state === 'running' && this.done.has(r.id));
    return {
      size: t.warm ?? 0,
      network: warmNetworkOf(t),
      ready: ready.length,
      network_ready: ready.filter((r) => kindOf(r.spec.network) === 'net').length,
      starting: m.filter((r) => ALIVE.has(r.state)).length - ready.length,
      claims: c.claims,
      misses: c.misses,
      last_error: c.lastError ?? null,
      members: m.map((r) => r.id),
    };
  }

  /**
   * Set how many started sandboxes a template keeps, and how many of them wait in a deny-all network
   * namespace (`network`; undefined keeps the current number, at most n); shrinking removes idle members at once.
   */
  async setSize(name: string, n: number, network?: number): Promise<TemplateRecord> {
    const max = Math.min(MAX_WARM, Math.max(0, this.mgr.cfg.maxSandboxes - 1));
    if (!Number.isInteger(n) || n < 0 || n > max) {
      throw new CordonError('invalid_argument', `warm: give a whole number from 0 to ${max} (the pool keeps one place of the daemon's --max-sandboxes ${this.mgr.cfg.maxSandboxes} free for users)`);
    }
    if (network !== undefined && (!Number.isInteger(network) || network < 0 || network > n)) {
      throw new CordonError('invalid_argument', `warm: network gives how many of the ${n} members have a network namespace; give a whole number from 0 to ${n}`);
    }
    const t = this.svc.get(name);
    const net = network ?? warmNetworkOf(t, n);
    if (net > 0) {
      if (!this.mgr.net) throw new CordonError('invalid_argument', 'warm: network members need the network capability, which this daemon does not have; leave network out or 0');
      this.mgr.net.validate(memberNetwork());
    }
    this.svc.store.put(withWarmPool(t, n, net));
    const over = () => (['plain', 'net'] as const).some((k) => this.alive(name, k).length > this.wanted(name)[k]);
    if (over()) await this.shrink(name);
    this.kick(name);
    // A member still starting is removed by the refill once it is up: wait for that, so the pool holds
    // at most n when this returns (a `template rm` right after `warm NAME 0` is not refused).
    if (over()) {
      await this.loops.get(name);
      if (over()) await this.shrink(name);
    }
    return this.svc.get(name);
  }

  private alive(name: string, kind: MemberKind): SandboxRecord[] {
    return this.members(name).filter((r) => ALIVE.has(r.state) && kindOf(r.spec.network) === kind);
  }

  /** Remove idle members past what the template wants of each kind (members still starting are removed by the refill when they are up). */
  private async shrink(name: string): Promise<void> {
    const want = this.wanted(name);
    const idle = (['plain', 'net'] as const).flatMap((k) => this.idle(name, k).slice(0, Math.max(0, this.alive(name, k).length - want[k])));
    await Promise.all(idle.map((r) => this.mgr.remove(r.id, true).catch((e: Error) => this.log(`removing pool member ${r.id} of template ${name} failed: ${e.message}`))));
  }

  /** Start (or re-run) the background refill of a template's pool. */
  kick(name: string): void {
    if (this.closed) return;
    if (this.loops.has(name)) {
      this.again.add(name);
      return;
    }
    const run = this.fill(name)
      .catch((e: Error) => this.log(`the warm pool of template ${name} stopped refilling: ${e.message}`))
      .finally(() => {
        this.loops.delete(name);
        if (this.again.delete(name)) this.kick(name);
      });
    this.loops.set(name, run);
  }

  private async fill(name: string): Promise<void> {
    let backoff = RETRY_FIRST_MS;
    const { cfg } = this.mgr;
    while (!this.closed) {
      const want = this.wanted(name);
      // A member that died (its service crashed, the runtime lost it) is replaced, not kept.
      for (const r of this.members(name).filter((x) => !ALIVE.has(x.state))) await this.mgr.remove(r.id, true).catch(() => {});
      const short = { plain: want.plain - this.alive(name, 'plain').length, net: want.net - this.alive(name, 'net').length };
      if (short.plain < 0 || short.net < 0) await this.shrink(name);
      if (short.plain <= 0 && short.net <= 0) return;
      // The kind further below its number goes first (plain on a tie).
      const kind: MemberKind = short.net > short.plain ? 'net' : 'plain';
      // Users first: no pool create while a user's create waits for a slot, and one place stays free.
      if (this.mgr.admission.slots.waiting > 0) {
        await sleep(HOLD_BACK_MS);
        continue;
      }
      if (this.mgr.countActive() + 1 >= cfg.maxSandboxes) {
        this.count(name).lastError = `held back: the daemon is at its sandbox cap (${cfg.maxSandboxes}) less the place kept for users`;
        await sleep(CAP_WAIT_MS);
        continue;
      }
      try {
        await this.one(name, kind);
        backoff = RETRY_FIRST_MS;
        this.count(name).lastError = undefined;
      } catch (e) {
        this.count(name).lastError = (e as Error).message;
        this.log(`starting a pool member of template ${name} failed (retry in ${backoff} ms): ${(e as Error).message}`);
        await sleep(backoff);
        backoff = Math.min(backoff * 2, RETRY_MAX_MS);
      }
    }
  }

  private one(name: string, kind: MemberKind): Promise<unknown> {
    // A networked member boots (files, start and ready commands) in a namespace that reaches nothing, as a
    // cold create of a networked request does: the template's memory snapshot was taken without a
    // namespace, and its checkpoint's mounts lack the network's files, so it cannot be restored into one.
    const network = kind === 'net' ? { network: memberNetwork() } : {};
    const next = this.serial
      .catch(() => {})
      .then(async () => {
        if (this.closed) return;
        const rec = await this.mgr.create({ template: name, labels: { [POOL_LABEL]: name }, timeoutMs: 0, ...network });
        const warm = await this.mgr.live.get(rec.id)?.warmUp(WARM_UP_MS);
        if (warm) this.mgr.store.addEvent(rec.id, 'pool-ready', `ready in the warm pool after a warm-up command (exit ${warm.exitCode ?? 'none'}, ${warm.ms} ms)`, warm);
        this.done.add(rec.id);
        // Forget members that are gone or were claimed (a claim may take one before its create returned).
        const left = new Set(this.members().map((r) => r.id));
        for (const id of this.done) if (!left.has(id)) this.done.delete(id);
      });
    this.serial = next.catch(() => {});
    return next;
  }

  /** Hand an idle member to a create of its template, with the request's env, labels, timeout and network. */
  async claim(input: CreateInput, runtime: RuntimeName): Promise<{ rec: SandboxRecord } | { miss?: string }> {
    const name = input.template!;
    if (input.labels?.[POOL_LABEL] !== undefined) return {};
    const t = this.svc.find(name);
    if (!t?.warm) return {};
    const miss = (why: string) => {
      this.count(name).misses++;
      return { miss: why };
    };
    if (runtime !== this.mgr.cfg.defaultRuntime) return miss(`the pool runs ${this.mgr.cfg.defaultRuntime}, the request asked for ${runtime}`);
    const field = fixedField(input);
    if (field) return miss(`the request sets ${field}, which a started sandbox has fixed`);
    const kind = kindOf(input.network);
    if (!this.wanted(name)[kind]) {
      return miss(kind === 'net'
        ? `the request has a network policy and the pool keeps no members with a network namespace; \`cordon template warm ${name} N --network M\` keeps M of them`
        : `the request has no network and every member of the pool has a network namespace; \`cordon template warm ${name} N --network M\` with M below N keeps some without`);
    }
    try {
      let failed: string | undefined;
      // A member still starting is taken too, last: the rest of its start is sooner than a start of our own.
      const starting = this.members(name).filter((r) => (r.state === 'creating' || r.state === 'restoring') && !this.claiming.has(r.id) && kindOf(r.spec.network) === kind);
      for (const r of [...this.idle(name, kind), ...starting]) {
        if (kind === 'net') {
          const why = claimNetworkMismatch(input.network!, r.spec.network);
          if (why) return miss(why);
        }
        this.claiming.add(r.id);
        try {
          const got = await this.take(r.id, name, input, kind);
          if (got && 'rec' in got) {
            this.done.delete(r.id);
            this.count(name).claims++;
            return { rec: got.rec };
          }
          if (got) {
            // Applying the request's network failed part way: the member is never handed out, nor kept.
            failed = got.failed;
            await this.mgr.remove(r.id, true).catch((e: Error) => this.log(`removing pool member ${r.id} of template ${name} failed: ${e.message}`));
            break;
          }
        } finally {
          this.claiming.delete(r.id);
        }
      }
      if (failed) return miss(`giving a member the request's network failed (${failed})`);
      const what = kind === 'net' ? ' with a network namespace' : ' without a network namespace';
      return miss(`the pool has no ready member${what}${starting.length ? ` (its ${starting.length} starting member${starting.length > 1 ? 's' : ''} failed to start)` : ''}`);
    } finally {
      setTimeout(() => this.kick(name), REFILL_AFTER_CLAIM_MS).unref();
    }
  }

  private take(id: string, name: string, input: CreateInput, kind: MemberKind): Promise<{ rec: SandboxRecord } | { failed: string } | undefined> {
    const mgr = this.mgr;
    return mgr.exclusive(id, async () => {
      const rec = mgr.store.get(id);
      const live = mgr.live.get(id);
      if (!rec || rec.state !== 'running' || rec.labels[POOL_LABEL] !== name || !live || kindOf(rec.spec.network) !== kind) return undefined;
      // The request's network first, while the member is still unlisted and deny-all: the handle goes
      // out only with the request's policy in force.
      if (kind === 'net') {
        try {
          await applyClaimNetwork(mgr, rec, input.network!);
        } catch (e) {
          return { failed: (e as Error).message };
        }
      }
      const timeoutMs = input.timeoutMs ?? mgr.cfg.defaultTimeoutMs;
      const spec = {
        ...rec.spec,
        env: claimEnv(rec, input),
        timeoutMs,
        ...(input.onTimeout && input.onTimeout !== 'kill' ? { onTimeout: input.onTimeout } : {}),
        ...(input.network ? { network: input.network } : {}),
      };
      const now = Date.now();
      const expiresAt = timeoutMs > 0 ? now + timeoutMs : undefined;
      mgr.store.update(id, { spec, labels: input.labels ?? {}, startedAt: now, expiresAt });
      live.setSpec(spec);
      mgr.schedule(id, expiresAt);
      const policy = kind === 'net' ? `, with the request's network policy (mode ${input.network!.mode})` : '';
      mgr.store.addEvent(id, 'pool-claim', `claimed from the warm pool of template ${name}, where it had waited ${Math.round((now - (rec.startedAt ?? rec.createdAt)) / 1000)} s${policy}`, { template: name, network: kind === 'net' });
      return { rec: mgr.get(id) };
    });
  }

  /** Make room for a user's create at the sandbox cap: remove one idle member of the fullest pool. */
  async evictIdle(): Promise<boolean> {
    const idle = this.idle();
    if (!idle.length) return false;
    const per = new Map<string, number>();
    for (const r of idle) per.set(r.labels[POOL_LABEL], (per.get(r.labels[POOL_LABEL]) ?? 0) + 1);
    const victim = idle.sort((a, b) => (per.get(b.labels[POOL_LABEL]) ?? 0) - (per.get(a.labels[POOL_LABEL]) ?? 0))[0];
    this.claiming.add(victim.id);
    try {
      await this.mgr.remove(victim.id, true);
      this.log(`removed pool member ${victim.id} of template ${victim.labels[POOL_LABEL]} to make room for a user's create at the sandbox cap`);
      return true;
    } catch {
      return false;
    } finally {
      this.claiming.delete(victim.id);
    }
  }

  /** Drop the idle members of a template (its build changed) and refill from the new build. */
  async renew(name: string): Promise<void> {
    await Promise.all(this.idle(name).map((r) => this.mgr.remove(r.id, true).catch(() => {})));
    this.kick(name);
  }

  /**
   * At daemon start: members from before the restart are removed (their claims state and process
   * handles were in the old daemon's memory; a fresh member is cheaper to trust), then every pool refills.
   */
  async restart(): Promise<void> {
    for (const r of this.members()) {
      await this.mgr.remove(r.id, true).catch((e: Error) => this.log(`removing pool member ${r.id} left by the previous daemon failed: ${e.message}`));
    }
    for (const t of this.svc.list()) if (t.warm) this.kick(t.name);
  }

  /** The daemon is closing: no new pool creates (members keep running; the next start replaces them). */
  close(): void {
    this.closed = true;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms).unref());
}
