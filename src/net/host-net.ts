import { run, runOk } from '../util/proc.js';
import { intToIp, ipToInt, parseCidr, type Cidr } from './addr.js';

// Host side of sandbox networking, owned by one daemon ("slot"): an nftables table that rejects any
// forwarding from or to sandbox links, drops what a sandbox sends from an address not its own (the
// daemon tells sandboxes apart by source address) and steers their DNS/TCP to the daemon, a dummy
// link holding the daemon's proxy address, and a routing table that pins upstream traffic to the
// egress link.

export interface HostNetOptions {
  slot: number;
  egressInterface?: string;
}

export const nftTable = (slot: number) => `cordon${slot}`;

export class HostNet {
  readonly table: string;
  readonly ifPrefix: string;
  /** Where the daemon's DNS resolver and transparent listeners bind. */
  readonly proxyIp: string;
  readonly subnet: Cidr;
  readonly routeTable: number;
  egressIp?: string;
  private ready = false;

  constructor(readonly opts: HostNetOptions) {
    if (!Number.isInteger(opts.slot) || opts.slot < 0 || opts.slot > 31) throw new Error('network slot must be 0..31');
    this.table = nftTable(opts.slot);
    this.ifPrefix = `cd${opts.slot}h`;
    // 100.96.0.0/11 (shared address space, never RFC1918): one /16 per daemon slot, a /30 per sandbox.
    this.subnet = parseCidr(`100.${96 + opts.slot}.0.0/16`)!;
    this.proxyIp = intToIp(this.subnet.base + 1);
    this.routeTable = 3100 + opts.slot;
  }

  isReady(): boolean {
    return this.ready;
  }

  /** Host-side and sandbox-side addresses of sandbox link `index` (1..16382). */
  linkAddrs(index: number): { host: string; sandbox: string; hostIf: string } {
    const base = this.subnet.base + index * 4;
    return { host: intToIp(base + 1), sandbox: intToIp(base + 2), hostIf: `${this.ifPrefix}${index}` };
  }

  /**
   * Step 1: the daemon's proxy address and the egress routing, so listeners can bind. Sandbox links
   * and the isolation table of a previous run are left alone: running sandboxes may still use them
   * (see restore in service.ts, which sweeps the ones nobody owns).
   */
  async setupLinks(): Promise<void> {
    await this.resetGlobal();
    const egress = this.opts.egressInterface;
    if (egress) this.egressIp = await egressAddress(egress);
    try {
      // On lo (this kernel has no dummy links); the input chain keeps it unreachable from elsewhere.
      await runOk('ip', ['addr', 'add', `${this.proxyIp}/32`, 'dev', 'lo']);
      if (egress && this.egressIp) await this.pinEgress(egress, this.egressIp);
    } catch (e) {
      await this.resetGlobal();
      throw e;
    }
  }

  /** The proxy address and the egress routing of this slot (not the table, not the links). */
  private async resetGlobal(): Promise<void> {
    await run('ip', ['addr', 'del', `${this.proxyIp}/32`, 'dev', 'lo']);
    while ((await run('ip', ['rule', 'del', 'priority', String(90 + this.opts.slot)])).code === 0);
    await run('ip', ['route', 'flush', 'table', String(this.routeTable)]);
  }

  /** Step 2: the isolation table; only after it may any veth be linked to the host. */
  async setupTable(ports: Map<number, number>, dnsPort: number): Promise<void> {
    const egress = this.opts.egressInterface;
    const map = [...ports].map(([o, l]) => `${o} : ${l}`).join(', ');
    const p = this.ifPrefix;
    const rules = `table inet ${this.table} {
  map ports { type inet_service : inet_service; ${map ? `elements = { ${map} }` : ''} }
  chain antispoof { type filter hook prerouting priority raw; policy accept;
    iifname "${p}*" fib saddr . iif oif missing drop
  }
  chain pre { type nat hook prerouting priority dstnat - 5; policy accept;
    iifname "${p}*" meta nfproto ipv4 udp dport 53 dnat ip to ${this.proxyIp}:${dnsPort}
    iifname "${p}*" meta nfproto ipv4 tcp dport @ports dnat ip to ${this.proxyIp} : tcp dport map @ports
  }
  chain input { type filter hook input priority filter - 5; policy accept;
    iifname "${p}*" ct state established,related accept
    iifname "${p}*" meta nfproto ipv4 ct status dnat ip daddr ${this.proxyIp} accept
    iifname "${p}*" reject with icmpx admin-prohibited
    ip daddr ${this.proxyIp} iifname != "lo" reject with icmpx admin-prohibited
  }
  chain forward { type filter hook forward priority filter - 5; policy accept;
    iifname "${p}*" reject with icmpx admin-prohibited
    oifname "${p}*" reject with icmpx admin-prohibited
  }
  chain output { type filter hook output priority filter - 5; policy accept;
    ${this.egressIp ? `ip saddr ${this.egressIp} oifname != "${egress}" reject with icmpx admin-prohibited` : ''}
  }
}
`;
    // One transaction: an older table (still guarding links of running sandboxes after a restart)
    // is replaced without a moment in which forwarding from sandbox links is open.
    await runOk('nft', ['-f', '-'], { input: `table inet ${this.table} {}\ndelete table inet ${this.table}\n${rules}` });
    this.ready = true;
  }

  /** Traffic from the egress address may only use routes through the egress link, never the default route. */
  private async pinEgress(egress: string, ip: string): Promise<void> {
    const t = String(this.routeTable);
    const routes = (await runOk('ip', ['-4', 'route', 'show', 'dev', egress])).stdout.split('\n').map((l) => l.trim()).filter(Boolean);
    for (const r of routes) {
      const words = r.split(/\s+/).filter((w, i, a) => !['proto', 'scope', 'metric'].includes(a[i - 1] ?? '') && !['proto', 'scope', 'metric', 'linkdown'].includes(w));
      await run('ip', ['route', 'add', ...words, 'dev', egress, 'table', t]);
    }
    await runOk('ip', ['route', 'add', 'unreachable', 'default', 'table', t]);
    await runOk('ip', ['rule', 'add', 'from', ip, 'lookup', t, 'priority', String(90 + this.opts.slot)]);
  }

  async addPort(orig: number, local: number): Promise<void> {
    await runOk('nft', ['add', 'element', 'inet', this.table, 'ports', `{ ${orig} : ${local} }`]);
  }

  /** Host ends of sandbox links and sandbox namespaces of this slot that exist in the kernel. */
  async kernelLinks(): Promise<{ links: string[]; netns: string[] }> {
    const links = (await run('ip', ['-o', 'link', 'show'])).stdout;
    const nets = (await run('ip', ['netns', 'list'])).stdout;
    return {
      links: [...links.matchAll(new RegExp(`^\\d+: (${this.ifPrefix}\\d+)[@:]`, 'gm'))].map((m) => m[1]),
      netns: [...nets.matchAll(new RegExp(`^(cordon${this.opts.slot}-[a-z0-9]+)`, 'gm'))].map((m) => m[1]),
    };
  }

  /** Delete sandbox links and namespaces of this slot except the ones kept; returns what was deleted. */
  async sweep(keepLinks: Set<string>, keepNetns: Set<string>): Promise<string[]> {
    const k = await this.kernelLinks();
    const gone: string[] = [];
    for (const l of k.links) if (!keepLinks.has(l) && (await run('ip', ['link', 'del', l])).code === 0) gone.push(l);
    for (const n of k.netns) if (!keepNetns.has(n) && (await run('ip', ['netns', 'del', n])).code === 0) gone.push(n);
    return gone;
  }

  async hasTable(): Promise<boolean> {
    return (await run('nft', ['list', 'table', 'inet', this.table])).code === 0;
  }

  /** Remove everything this slot may have left behind (also after a crash). Links go before the table. */
  async cleanup(): Promise<void> {
    await this.sweep(new Set(), new Set());
    await run('nft', ['delete', 'table', 'inet', this.table]);
    await this.resetGlobal();
    this.ready = false;
  }
}

async function egressAddress(iface: string): Promise<string> {
  const r = await run('ip', ['-4', '-o', 'addr', 'show', 'dev', iface]);
  const m = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(r.stdout);
  if (r.code !== 0 || !m) throw new Error(`--egress-interface ${iface}: no such interface with an IPv4 address`);
  return m[1];
}

export { ipToInt };
