import https from 'node:https';
import http from 'node:http';
import { join } from 'node:path';
import { CordonError } from '../errors/registry.js';
import { CertAuthority, upstreamCas } from './ca.js';
import type { NetEvent, SandboxNetContext, Upstream } from './forward.js';
import { HostNet } from './host-net.js';
import { TransparentListener } from './listener.js';
import { Policy } from './policy.js';
import { startDnsServer, UpstreamDns } from './resolver.js';
import { PortForwards } from './port-forward.js';
import { SandboxLinks, type SandboxLink } from './sandbox-net.js';
import type { NetworkMode, NetworkSpec } from './types.js';

// The daemon's network capability: set up on first use, so daemons whose sandboxes never get a
// network touch nothing on the host.

export interface NetConfig {
  dataDir: string;
  slot: number;
  egressInterface?: string;
  upstreamCaFile?: string;
  dnsServers: string[];
  defaultMode: NetworkMode;
}

export type NetReporter = (sandboxId: string, e: NetEvent) => void;

export class NetworkService {
  readonly host: HostNet;
  readonly links: SandboxLinks;
  readonly ca: CertAuthority;
  readonly forwards = new PortForwards();
  private readonly contexts = new Map<string, SandboxNetContext>();
  private readonly listeners = new Map<number, TransparentListener>();
  private ready?: Promise<void>;
  private dns?: { port: number; close(): void };
  private upstream?: Upstream;

  constructor(readonly cfg: NetConfig, private readonly reporter: NetReporter) {
    this.host = new HostNet({ slot: cfg.slot, egressInterface: cfg.egressInterface });
    this.links = new SandboxLinks(this.host);
    this.ca = new CertAuthority(join(cfg.dataDir, 'net-ca'));
  }

  /** Refuse what this daemon cannot enforce, before anything is created. */
  validate(spec: NetworkSpec): void {
    if (spec.mode !== 'none' && !this.cfg.egressInterface) {
      throw new CordonError('invalid_argument', `network: mode ${spec.mode} needs an egress interface; start the daemon with cordon serve --egress-interface IFACE`);
    }
  }

  private ensure(): Promise<void> {
    this.ready ??= this.init().catch((e) => {
      this.ready = undefined;
      throw e;
    });
    return this.ready;
  }

  private async init(): Promise<void> {
    await this.ca.init();
    await this.host.setupLinks();
    const local = this.host.egressIp ?? this.host.proxyIp;
    const ca = await upstreamCas(this.cfg.upstreamCaFile);
    this.upstream = {
      dns: new UpstreamDns(this.host.egressIp),
      localAddress: local,
      http: new http.Agent({ keepAlive: true, localAddress: local }),
      https: new https.Agent({ keepAlive: true, localAddress: local, ca }),
    };
    this.dns = await startDnsServer(this.host.proxyIp, (ip) => this.ctxFor(ip), this.upstream.dns, (ip, name, _ok, reason) => {
      const l = this.links.bySource(ip);
      if (l) this.reporter(l.id, { method: 'DNS', url: `dns:${name}`, host: name, status: 0, request_bytes: 0, response_bytes: 0, duration_ms: 0, blocked: true, block_reason: reason });
    });
    for (const p of [80, 443]) await this.listen(p, false);
    await this.host.setupTable(new Map([...this.listeners].map(([o, l]) => [o, l.port])), this.dns.port);
  }

  private async listen(orig: number, addToTable = true): Promise<void> {
    if (this.listeners.has(orig)) return;
    const l = new TransparentListener(orig, (ip) => this.ctxFor(ip), this.ca, this.upstream!);
    this.listeners.set(orig, l);
    await l.listen(this.host.proxyIp);
    if (addToTable) await this.host.addPort(orig, l.port);
  }

  private ctxFor(ip: string): SandboxNetContext | undefined {
    const l = this.links.bySource(ip);
    return l ? this.contexts.get(l.id) : undefined;
  }

  /** Give a booting sandbox its namespace and policy; returns the link the runtime joins. */
  async attach(id: string, spec: NetworkSpec): Promise<SandboxLink> {
    await this.ensure();
    const link = await this.links.create(id, spec.mtu);
    try {
      this.setPolicy(id, spec);
      for (const p of new Policy(spec).ports()) await this.listen(p);
      for (const f of spec.ports) await this.forwards.add(id, link.sandboxIp, f);
    } catch (e) {
      await this.detach(id);
      throw e;
    }
    return link;
  }

  /** Replace a sandbox's rules at runtime; pinned answers for names no longer allowed are dropped. */
  setPolicy(id: string, spec: NetworkSpec): void {
    const old = this.contexts.get(id);
    const policy = new Policy(spec, [this.host.subnet]);
    const pins = old?.pins ?? new Map<string, string[]>();
    for (const name of [...pins.keys()]) if (!policy.name(name).allowed) pins.delete(name);
    this.contexts.set(id, {
      id, policy, pins,
      upstream: spec.dnsServers.length ? spec.dnsServers : this.cfg.dnsServers,
      secrets: spec.secrets, rules: spec.rules,
      report: (e) => this.reporter(id, e),
    });
  }

  async updatePorts(spec: NetworkSpec): Promise<void> {
    for (const p of new Policy(spec).ports()) await this.listen(p);
  }

  async detach(id: string): Promise<void> {
    this.contexts.delete(id);
    this.forwards.remove(id);
    await this.links.destroy(id);
  }

  /** /etc/resolv.conf for the sandbox: any server works (port 53 is steered to the daemon). */
  resolvConf(link: SandboxLink): string {
    return `nameserver ${link.hostIp}\noptions ndots:0 attempts:2 timeout:2\n`;
  }

  async close(): Promise<void> {
    for (const l of this.listeners.values()) l.close();
    this.listeners.clear();
    this.dns?.close();
    this.upstream?.http.destroy();
    this.upstream?.https.destroy();
    if (this.ready) await this.host.cleanup();
  }
}
