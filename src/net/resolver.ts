import { createSocket } from 'node:dgram';
import { isIPv4 } from 'node:net';
import { buildAnswer, parseQuery, TYPE_A } from './dns-wire.js';
import type { Policy } from './policy.js';
import type { UpstreamDns } from './upstream-dns.js';

export { UpstreamDns } from './upstream-dns.js';

// The daemon's DNS resolver for sandboxes: answers only names the policy allows (and add-hosts),
// asks upstream only through the egress address, and pins each answer until its TTL runs out. A
// pin is only ever replaced by a fresh upstream answer filtered through the policy, so DNS
// rebinding cannot hand a sandbox an address the policy would not let it reach; a refresh that
// yields nothing usable (an error, NXDOMAIN, only blocked addresses) keeps the pinned answer.

export interface Pin {
  ips: string[];
  /** When (ms since the epoch) the answer's TTL runs out and upstream is asked again. */
  expires: number;
}

export interface ResolveContext {
  policy: Policy;
  /** Pinned answers of this sandbox: name -> addresses and expiry. */
  pins: Map<string, Pin>;
  upstream: string[];
}

/** TTLs are clamped to this range: a tiny TTL must not turn every request into an upstream query. */
export const PIN_MIN_TTL_S = 5;
export const PIN_MAX_TTL_S = 3600;
/** Pinned names per sandbox; past it the oldest pin goes (it is asked for again when used). */
export const MAX_PINS = 1024;
/**
 * Upstream lookups in flight for one sandbox, and for all of them together. Each holds a socket of
 * the daemon until it is answered or times out, so a sandbox asking for endless names nobody answers
 * would otherwise take every file descriptor the daemon has.
 */
export const MAX_LOOKUPS_PER_SANDBOX = 64;
export const MAX_LOOKUPS = 512;
let lookupsInFlight = 0;

/** A lookup refused because too many are in flight (answered SERVFAIL, so the client retries). */
export class LookupsBusy extends Error {}

const NAME_RE = /^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$/;

const inflight = new WeakMap<ResolveContext, Map<string, Promise<{ ips: string[]; reason?: string }>>>();

/** Addresses a sandbox may use for a name, or a reason it may not. */
export async function resolveFor(ctx: ResolveContext, upstream: UpstreamDns, name: string): Promise<{ ips: string[]; reason?: string }> {
  const n = name.toLowerCase().replace(/\.$/, '');
  if (n.length > 253 || !NAME_RE.test(n)) return { ips: [], reason: 'malformed host name' };
  const v = ctx.policy.name(n);
  if (!v.allowed) return { ips: [], reason: v.reason };
  // add-host entries only name addresses; whether a connection may go there is the policy's call.
  const added = ctx.policy.spec.addHosts.filter((h) => h.host.toLowerCase() === n).map((h) => h.ip);
  if (added.length) return { ips: added };
  const pinned = ctx.pins.get(n);
  if (pinned && pinned.expires > Date.now()) return { ips: pinned.ips };
  let mine = inflight.get(ctx);
  if (!mine) inflight.set(ctx, (mine = new Map()));
  let p = mine.get(n);
  if (!p) {
    if (mine.size >= MAX_LOOKUPS_PER_SANDBOX || lookupsInFlight >= MAX_LOOKUPS) {
      const kept = pinned ? usableFor(ctx.policy, n, pinned.ips) : [];
      if (kept.length) return { ips: kept };
      throw new LookupsBusy(`too many DNS lookups in flight (at most ${MAX_LOOKUPS_PER_SANDBOX} per sandbox); retry in a moment`);
    }
    lookupsInFlight++;
    p = lookup(ctx, upstream, n, pinned).finally(() => {
      mine.delete(n);
      lookupsInFlight--;
    });
    mine.set(n, p);
  }
  return p;
}

/** Addresses among ips that a connection to name could reach on some port the policy allows. */
function usableFor(policy: Policy, name: string, ips: string[]): string[] {
  const ports = [...new Set([443, 80, ...policy.ports()])];
  return ips.filter((ip) => isIPv4(ip) && ports.some((p) => policy.connection(name, ip, p).allowed));
}

function pin(ctx: ResolveContext, name: string, ips: string[], ttl: number): void {
  if (!ctx.pins.has(name)) while (ctx.pins.size >= MAX_PINS) ctx.pins.delete(ctx.pins.keys().next().value!);
  ctx.pins.set(name, { ips, expires: Date.now() + Math.min(PIN_MAX_TTL_S, Math.max(PIN_MIN_TTL_S, ttl)) * 1000 });
}

async function lookup(ctx: ResolveContext, upstream: UpstreamDns, n: string, old: Pin | undefined): Promise<{ ips: string[]; reason?: string }> {
  const kept = old ? usableFor(ctx.policy, n, old.ips) : [];
  let answer;
  try {
    answer = await upstream.query(n, ctx.upstream);
  } catch (e) {
    if (!kept.length) throw e;
    pin(ctx, n, kept, PIN_MIN_TTL_S);
    return { ips: kept };
  }
  const ips = answer.ips.filter((ip) => isIPv4(ip));
  const usable = usableFor(ctx.policy, n, ips);
  if (usable.length) {
    pin(ctx, n, usable, answer.ttl);
    return { ips: usable };
  }
  if (kept.length) {
    pin(ctx, n, kept, PIN_MIN_TTL_S);
    return { ips: kept };
  }
  if (!ips.length) return { ips: [], reason: `${n} has no IPv4 address` };
  return { ips: [], reason: ctx.policy.connection(n, ips[0], 443).reason };
}

export interface DnsLookup {
  (sourceIp: string): ResolveContext | undefined;
}

export type DnsReport = (sourceIp: string, name: string, allowed: boolean, reason: string) => void;

/** At most one report a second per key. */
class ReportGate {
  private readonly last = new Map<string, number>();
  due(key: string): boolean {
    const now = Date.now();
    if (now - (this.last.get(key) ?? 0) < 1000) return false;
    if (this.last.size > 4096) this.last.clear();
    this.last.set(key, now);
    return true;
  }
}

/** The UDP server sandboxes' port-53 traffic is steered to. */
export function startDnsServer(
  bind: string,
  lookup: DnsLookup,
  upstream: UpstreamDns,
  report: DnsReport,
  counted: (outcome: 'answered' | 'refused' | 'failed') => void = () => {},
): Promise<{ port: number; close(): void }> {
  const sock = createSocket('udp4');
  const busyReport = new ReportGate();
  sock.on('message', async (msg, rinfo) => {
    const q = parseQuery(msg);
    if (!q) return;
    const ctx = lookup(rinfo.address);
    const reply = (b: Buffer) => sock.send(b, rinfo.port, rinfo.address);
    if (!ctx) return reply(buildAnswer(q, 5));
    try {
      const r = await resolveFor(ctx, upstream, q.name);
      if (r.reason) {
        counted('refused');
        report(rinfo.address, q.name, false, r.reason);
        return reply(buildAnswer(q, 3));
      }
      counted('answered');
      // AAAA and other types get an empty answer: sandboxes have IPv4 only.
      reply(buildAnswer(q, 0, q.type === TYPE_A ? r.ips : []));
    } catch (e) {
      counted('failed');
      // A flood is reported once a second per sandbox, not once per refused query.
      if (!(e instanceof LookupsBusy) || busyReport.due(rinfo.address)) report(rinfo.address, q.name, false, `lookup failed: ${(e as Error).message}`);
      reply(buildAnswer(q, 2));
    }
  });
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ address: bind, port: 0 }, () => resolve({ port: sock.address().port, close: () => sock.close() }));
  });
}
