import { createSocket } from 'node:dgram';
import { isIPv4 } from 'node:net';
import { buildAnswer, buildQuery, parseAnswers, parseQuery, TYPE_A } from './dns-wire.js';
import type { Policy } from './policy.js';

// The daemon's DNS resolver for sandboxes: answers only names the policy allows (and add-hosts),
// asks upstream only through the egress address, and pins the first answer for the sandbox's life
// so a later, different answer (DNS rebinding) can never redirect its connections.

export interface ResolveContext {
  policy: Policy;
  /** Pinned answers of this sandbox: name -> addresses. */
  pins: Map<string, string[]>;
  upstream: string[];
}

export class UpstreamDns {
  constructor(private readonly localAddress: string | undefined) {}

  async query(name: string, servers: string[]): Promise<string[]> {
    if (!this.localAddress) throw new Error('no egress interface configured');
    let last: Error = new Error('no DNS server configured for upstream lookups (--dns-server)');
    for (const server of servers) {
      try {
        return await this.ask(name, server);
      } catch (e) {
        last = e as Error;
      }
    }
    throw last;
  }

  private ask(name: string, server: string): Promise<string[]> {
    return new Promise((resolve, reject) => {
      const sock = createSocket('udp4');
      const id = Math.floor(Math.random() * 65535);
      const done = (err?: Error, ips?: string[]) => {
        clearTimeout(timer);
        sock.close();
        if (err) reject(err);
        else resolve(ips!);
      };
      const timer = setTimeout(() => done(new Error(`DNS server ${server} did not answer`)), 3000);
      sock.on('error', (e) => done(e));
      sock.on('message', (msg) => {
        try {
          const r = parseAnswers(msg);
          if (r.id !== id) return;
          if (r.rcode === 3) return done(undefined, []);
          if (r.rcode !== 0) return done(new Error(`DNS server ${server} answered rcode ${r.rcode}`));
          done(undefined, r.ips);
        } catch (e) {
          done(e as Error);
        }
      });
      sock.bind({ address: this.localAddress, port: 0 }, () => sock.send(buildQuery(id, name), 53, server));
    });
  }
}

/** Addresses a sandbox may use for a name, or a reason it may not. */
export async function resolveFor(ctx: ResolveContext, upstream: UpstreamDns, name: string): Promise<{ ips: string[]; reason?: string }> {
  const n = name.toLowerCase().replace(/\.$/, '');
  const v = ctx.policy.name(n);
  if (!v.allowed) return { ips: [], reason: v.reason };
  const pinned = ctx.pins.get(n);
  if (pinned) return { ips: pinned };
  const added = ctx.policy.spec.addHosts.filter((h) => h.host.toLowerCase() === n).map((h) => h.ip);
  const ips = added.length ? added : (await upstream.query(n, ctx.upstream)).filter((ip) => isIPv4(ip));
  if (!ips.length) return { ips: [], reason: `${n} has no IPv4 address` };
  // Only addresses the policy would let a connection reach on some allowed port are handed out.
  const usable = ips.filter((ip) => ctx.policy.connection(n, ip, 443).allowed || ctx.policy.connection(n, ip, 80).allowed || ctx.policy.ports().some((p) => ctx.policy.connection(n, ip, p).allowed));
  if (!usable.length) return { ips: [], reason: ctx.policy.connection(n, ips[0], 443).reason };
  ctx.pins.set(n, usable);
  return { ips: usable };
}

export interface DnsLookup {
  (sourceIp: string): ResolveContext | undefined;
}

export type DnsReport = (sourceIp: string, name: string, allowed: boolean, reason: string) => void;

/** The UDP server sandboxes' port-53 traffic is steered to. */
export function startDnsServer(bind: string, lookup: DnsLookup, upstream: UpstreamDns, report: DnsReport): Promise<{ port: number; close(): void }> {
  const sock = createSocket('udp4');
  sock.on('message', async (msg, rinfo) => {
    const q = parseQuery(msg);
    if (!q) return;
    const ctx = lookup(rinfo.address);
    const reply = (b: Buffer) => sock.send(b, rinfo.port, rinfo.address);
    if (!ctx) return reply(buildAnswer(q, 5));
    try {
      const r = await resolveFor(ctx, upstream, q.name);
      if (r.reason) {
        report(rinfo.address, q.name, false, r.reason);
        return reply(buildAnswer(q, 3));
      }
      // AAAA and other types get an empty answer: sandboxes have IPv4 only.
      reply(buildAnswer(q, 0, q.type === TYPE_A ? r.ips : []));
    } catch (e) {
      report(rinfo.address, q.name, false, `lookup failed: ${(e as Error).message}`);
      reply(buildAnswer(q, 2));
    }
  });
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ address: bind, port: 0 }, () => resolve({ port: sock.address().port, close: () => sock.close() }));
  });
}
