import { run, runOk } from '../util/proc.js';
import type { HostNet } from './host-net.js';

// One network namespace per sandbox, linked to the host by a veth whose host end is covered by the
// daemon's nftables table (installed before any link exists). Recreated on every boot because runsc
// takes the addresses off the link when it starts.

export interface SandboxLink {
  id: string;
  index: number;
  netns: string;
  netnsPath: string;
  hostIf: string;
  hostIp: string;
  sandboxIp: string;
}

export class SandboxLinks {
  private readonly byId = new Map<string, SandboxLink>();
  private readonly byIp = new Map<string, SandboxLink>();

  constructor(private readonly host: HostNet) {}

  get(id: string): SandboxLink | undefined {
    return this.byId.get(id);
  }

  bySource(ip: string): SandboxLink | undefined {
    return this.byIp.get(ip.replace(/^::ffff:/, ''));
  }

  private freeIndex(): number {
    const used = new Set([...this.byId.values()].map((l) => l.index));
    for (let i = 1; i < 16383; i++) if (!used.has(i)) return i;
    throw new Error('no free sandbox network addresses');
  }

  async create(id: string, mtu: number): Promise<SandboxLink> {
    if (!this.host.isReady()) throw new Error('host networking is not set up');
    await this.destroy(id);
    const index = this.freeIndex();
    const a = this.host.linkAddrs(index);
    const netns = `cordon${this.host.opts.slot}-${id.slice(0, 12)}`;
    const link: SandboxLink = { id, index, netns, netnsPath: `/var/run/netns/${netns}`, hostIf: a.hostIf, hostIp: a.host, sandboxIp: a.sandbox };
    this.byId.set(id, link);
    this.byIp.set(link.sandboxIp, link);
    const peer = `cd${this.host.opts.slot}s${index}`;
    try {
      await run('ip', ['netns', 'del', netns]);
      await runOk('ip', ['netns', 'add', netns]);
      await runOk('ip', ['link', 'add', a.hostIf, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', peer, 'mtu', String(mtu), 'netns', netns]);
      await runOk('ip', ['addr', 'add', `${a.host}/30`, 'dev', a.hostIf]);
      await runOk('ip', ['link', 'set', a.hostIf, 'up']);
      const batch = [
        `link set ${peer} name eth0`,
        `addr add ${a.sandbox}/30 dev eth0`,
        'link set eth0 up',
        'link set lo up',
        `route add default via ${a.host} dev eth0`,
      ].join('\n');
      await runOk('ip', ['-n', netns, '-batch', '-'], { input: batch + '\n' });
    } catch (e) {
      await this.destroy(id);
      throw e;
    }
    return link;
  }

  async destroy(id: string): Promise<void> {
    const l = this.byId.get(id);
    if (!l) return;
    this.byId.delete(id);
    this.byIp.delete(l.sandboxIp);
    await run('ip', ['link', 'del', l.hostIf]);
    await run('ip', ['netns', 'del', l.netns]);
  }

  all(): SandboxLink[] {
    return [...this.byId.values()];
  }
}
