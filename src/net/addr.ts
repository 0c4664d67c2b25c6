import { isIPv4 } from 'node:net';

// IPv4 arithmetic for CIDR checks; IPv6 is never routed for sandboxes (fail closed).

export function ipToInt(ip: string): number {
  return ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface Cidr {
  base: number;
  bits: number;
}

export function parseCidr(s: string): Cidr | undefined {
  const [ip, bitsStr] = s.split('/');
  if (!isIPv4(ip)) return undefined;
  const bits = bitsStr === undefined ? 32 : Number(bitsStr);
  if (!Number.isInteger(bits) || bits < 0 || bits > 32 || (bitsStr !== undefined && !/^\d+$/.test(bitsStr))) return undefined;
  return { base: maskOf(ipToInt(ip), bits), bits };
}

function maskOf(n: number, bits: number): number {
  return bits === 0 ? 0 : (n & (~0 << (32 - bits))) >>> 0;
}

export function cidrContains(c: Cidr, ip: string): boolean {
  return isIPv4(ip) && maskOf(ipToInt(ip), c.bits) === c.base;
}

/**
 * Ranges open egress never reaches unless an allow entry names them: private, loopback, link-local,
 * metadata, and shared address space (100.64.0.0/10: carrier NAT, and a common VPC secondary range).
 */
export const BLOCKED_RANGES = [
  '0.0.0.0/8', '10.0.0.0/8', '100.64.0.0/10', '127.0.0.0/8', '169.254.0.0/16', '172.16.0.0/12', '192.168.0.0/16',
  '100.100.100.200/32', '192.0.0.0/24', '224.0.0.0/4', '240.0.0.0/4', '255.255.255.255/32',
].map((c) => parseCidr(c)!);

export function isBlockedRange(ip: string, extra: Cidr[] = []): boolean {
  return !isIPv4(ip) || [...BLOCKED_RANGES, ...extra].some((c) => cidrContains(c, ip));
}
