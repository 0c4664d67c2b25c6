import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, runOk } from '../util/proc.js';
import type { HostNet } from './host-net.js';

// One network namespace per sandbox, linked to the host by a veth whose host end is covered by the
// daemon's nftables table (installed before any link exists). Recreated on every boot because runsc
// takes the addresses off the link when it starts. Each link is also written to STATE/ID.json so a
// restarted daemon can adopt the links of sandboxes that kept running.

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

  constructor(private readonly host: HostNet, private readonly stateDir: string) {}

  private stateFile(id: string): string {
    return join(this.stateDir, `${id}.json`);
  }

  /** Ids with a saved link (from this run or an earlier one). */
  async saved(): Promise<string[]> {
    return (await readdir(this.stateDir).catch(() => [] as string[])).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5));
  }

  async forget(id: string): Promise<void> {
    await rm(this.stateFile(id), { force: true });
  }

  /**
   * Take over the link a previous daemon made for a sandbox that is still running. When its host end
   * is gone but the namespace is there, the veth is made again (`rebuild`: crun/runc; runsc reads the
   * link only when it starts, so a runsc sandbox cannot get a new one). Undefined when it cannot be had.
   */
  async adopt(id: string, mtu: number, rebuild: boolean): Promise<SandboxLink | undefined> {
    let link: SandboxLink;
    try {
      link = JSON.parse(await readFile(this.stateFile(id), 'utf8')) as SandboxLink;
    } catch {
      return undefined;
    }
    const a = this.host.linkAddrs(link.index);
    if (link.id !== id || a.hostIf !== link.hostIf || a.host !== link.hostIp || [...this.byId.values()].some((l) => l.index === link.index)) return undefined;
    if (!existsSync(link.netnsPath)) return undefined;
    const hostEnd = await run('ip', ['-4', '-o', 'addr', 'show', 'dev', link.hostIf]);
    this.byId.set(id, link);
    this.byIp.set(link.sandboxIp, link);
    try {
      if (hostEnd.code === 0) {
        if (!hostEnd.stdout.includes(`inet ${link.hostIp}/30`)) await runOk('ip', ['addr', 'add', `${link.hostIp}/30`, 'dev', link.hostIf]);
        await runOk('ip', ['link', 'set', link.hostIf, 'up']);
      } else if (rebuild) {
        await run('ip', ['-n', link.netns, 'link', 'del', 'eth0']);
        await this.wire(link, mtu);
      } else {
        throw new Error('host end of the link is gone');
      }
    } catch {
      this.byId.delete(id);
      this.byIp.delete(link.sandboxIp);
      return undefined;
    }
    return link;
  }

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
    try {
      await mkdir(this.stateDir, { recursive: true });
      await writeFile(this.stateFile(id), JSON.stringify(link));
      await run('ip', ['netns', 'del', netns]);
      await runOk('ip', ['netns', 'add', netns]);
      await this.wire(link, mtu);
    } catch (e) {
      await this.destroy(id);
      throw e;
    }
    return link;
  }

  /** The veth between the host and the (existing) namespace, with addresses and the default route. */
  private async wire(link: SandboxLink, mtu: number): Promise<void> {
    if (!this.host.isReady()) throw new Error('host networking is not set up');
    const peer = `cd${this.host.opts.slot}s${link.index}`;
    await runOk('ip', ['link', 'add', link.hostIf, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', peer, 'mtu', String(mtu), 'netns', link.netns]);
    await runOk('ip', ['addr', 'add', `${link.hostIp}/30`, 'dev', link.hostIf]);
    await runOk('ip', ['link', 'set', link.hostIf, 'up']);
    const batch = [
      `link set ${peer} name eth0`,
      `addr add ${link.sandboxIp}/30 dev eth0`,
      'link set eth0 up',
      'link set lo up',
      `route add default via ${link.hostIp} dev eth0`,
    ].join('\n');
    await runOk('ip', ['-n', link.netns, '-batch', '-'], { input: batch + '\n' });
  }

  async destroy(id: string): Promise<void> {
    const l = this.byId.get(id);
    if (!l) return;
    this.byId.delete(id);
    this.byIp.delete(l.sandboxIp);
    await run('ip', ['link', 'del', l.hostIf]);
    await run('ip', ['netns', 'del', l.netns]);
    await this.forget(id);
  }

  all(): SandboxLink[] {
    return [...this.byId.values()];
  }
}
