import { isIPv4 } from 'node:net';
import { cidrContains, isBlockedRange, parseCidr, type Cidr } from './addr.js';
import type { NetworkSpec } from './types.js';

// Decides whether a sandbox may reach a host name / address / port. Deny entries always win.

export interface Entry {
  raw: string;
  glob?: RegExp;
  cidr?: Cidr;
  ports?: number[];
}

const HOST_RE = /^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,62})?)(\.[a-z0-9_]([a-z0-9_-]{0,62})?)*\.?$|^\*$/i;

/** Parse `host`, `*.host`, `host:443`, `host:80,443`, `1.2.3.4`, `10.0.0.0/8`, `10.0.0.0/8:5432`; undefined when malformed. */
export function parseEntry(raw: string): Entry | undefined {
  const s = raw.trim().toLowerCase();
  if (!s || s.length > 300) return undefined;
  const m = /^(.*?)(?::([\d,]+))?$/.exec(s)!;
  const target = m[1];
  let ports: number[] | undefined;
  if (m[2] !== undefined) {
    ports = m[2].split(',').map(Number);
    if (ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) return undefined;
  }
  if (/^[\d./]+$/.test(target)) {
    const cidr = parseCidr(target);
    return cidr ? { raw, cidr, ports } : undefined;
  }
  if (!HOST_RE.test(target)) return undefined;
  return { raw, glob: globToRegex(target.replace(/\.$/, '')), ports };
}

export function globToRegex(glob: string): RegExp {
  const body = glob.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*');
  return new RegExp(`^${body}$`, 'i');
}

export interface Verdict {
  allowed: boolean;
  reason: string;
}

const DEFAULT_PORTS = [80, 443];

export class Policy {
  private allow: Entry[];
  private deny: Entry[];
  constructor(
    readonly spec: NetworkSpec,
    private readonly internal: Cidr[] = [],
  ) {
    this.allow = spec.allow.map((a) => parseEntry(a)!).filter(Boolean);
    this.deny = spec.deny.map((a) => parseEntry(a)!).filter(Boolean);
  }

  private static hostMatch(e: Entry, host: string): boolean {
    return !!e.glob && e.glob.test(host.replace(/\.$/, ''));
  }

  /** May DNS answer this name at all (before knowing addresses)? add-host names always resolve. */
  name(host: string): Verdict {
    if (this.spec.mode === 'none') return { allowed: false, reason: 'network mode is none' };
    if (this.deny.some((e) => Policy.hostMatch(e, host))) return { allowed: false, reason: `host ${host} is denied` };
    if (this.spec.addHosts.some((h) => h.host.toLowerCase() === host.toLowerCase())) return { allowed: true, reason: 'add-host entry' };
    if (this.spec.mode === 'open') return { allowed: true, reason: 'open egress' };
    if (this.allow.some((e) => Policy.hostMatch(e, host))) return { allowed: true, reason: 'allowlisted host' };
    return { allowed: false, reason: `host ${host} is not in the allowlist` };
  }

  /**
   * Full check for a connection: name (or IP literal), the address it will go to, the port.
   * add-host entries never grant egress: they only say which address a name has, so a private
   * address from one is reachable when an allow entry names the host (the user chose that address,
   * not upstream DNS); otherwise allow entries and open mode decide, as for any name.
   */
  connection(host: string, ip: string, port: number): Verdict {
    if (this.spec.mode === 'none') return { allowed: false, reason: 'network mode is none' };
    if (!isIPv4(ip)) return { allowed: false, reason: `address ${ip} is not IPv4` };
    const literal = isIPv4(host);
    const denied = this.deny.find((e) => (e.cidr ? cidrContains(e.cidr, ip) : !literal && Policy.hostMatch(e, host)) && (!e.ports || e.ports.includes(port)));
    if (denied) return { allowed: false, reason: `denied by ${denied.raw}` };
    if (this.internal.some((c) => cidrContains(c, ip))) return { allowed: false, reason: `address ${ip} belongs to cordon itself` };
    const byAddHost = !literal && this.spec.addHosts.some((h) => h.host.toLowerCase() === host.toLowerCase() && h.ip === ip);
    const hit = this.allow.find((e) => (e.cidr ? cidrContains(e.cidr, ip) : !literal && Policy.hostMatch(e, host)) && (e.ports ? e.ports.includes(port) : DEFAULT_PORTS.includes(port)));
    const ipExplicit = this.allow.some((e) => e.cidr && cidrContains(e.cidr, ip));
    if (isBlockedRange(ip) && !ipExplicit && !(byAddHost && hit)) return { allowed: false, reason: `address ${ip} is in a private, shared (carrier NAT), loopback, link-local or metadata range` };
    if (hit) return { allowed: true, reason: `allowed by ${hit.raw}` };
    if (this.spec.mode === 'open') {
      if (literal) return { allowed: false, reason: `raw address ${ip} without a host name` };
      return DEFAULT_PORTS.includes(port) ? { allowed: true, reason: 'open egress' } : { allowed: false, reason: `port ${port} is not allowed` };
    }
    return { allowed: false, reason: literal ? `address ${ip} is not in the allowlist` : `host ${host}:${port} is not in the allowlist` };
  }

  /** Ports a transparent listener is needed for. */
  ports(): number[] {
    return [...new Set([...DEFAULT_PORTS, ...this.allow.flatMap((e) => e.ports ?? [])])];
  }
}
