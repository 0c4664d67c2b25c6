import https from 'node:https';
import http from 'node:http';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CordonError } from '../errors/registry.js';
import { CertAuthority, upstreamCas } from './ca.js';
import type { NetEvent, SandboxNetContext, Upstream } from './forward.js';
import { NO_TELEMETRY, type Telemetry } from '../telemetry/telemetry.js';
import { HostNet } from './host-net.js';
import { ConnectionCap, TransparentListener } from './listener.js';
import { Policy } from './policy.js';
import { startDnsServer, UpstreamDns } from './resolver.js';
import { SavedPins } from './saved-pins.js';
import { PortForwards } from './port-forward.js';
import { CallbackHub } from './callbacks.js';
import { SandboxLinks, type SandboxLink } from './sandbox-net.js';
import { needsNamespace, type NetworkMode, type NetworkSpec } from './types.js';

// The daemon's network capability: set up on first use, so daemons whose sandboxes never get a
// network touch nothing on the host. After a restart or crash, restore() takes over the links of
// sandboxes that kept running (policy from their stored spec) and removes everything else.

export interface NetConfig {
  dataDir: string;
  slot: number;
  egressInterface?: string;
  upstreamCaFile?: string;
  dnsServers: string[];
  defaultMode: NetworkMode;
  /** Daemon variables allowed as secret values (`--secret-env NAME`); nothing else of its environment is. */
  secretEnv: ReadonlyMap<string, string>;
  /** Egress proxy: idle (read) timeout of an exchange, upstream and sandbox side. */
  idleTimeoutMs: number;
  /** Egress proxy: concurrent connections one sandbox may hold. */
  maxConnections: number;
}

export type NetReporter = (sandboxId: string, e: NetEvent) => void;

/** A sandbox that is still running when the daemon starts. */
export interface RunningNetSandbox {
  id: string;
  network?: NetworkSpec;
  /** Whether the sandbox would see a link rebuilt now (a kernel namespace; not gVisor's netstack). */
  relink: boolean;
}

export class NetworkService {
  readonly host: HostNet;
  readonly links: SandboxLinks;
  readonly ca: CertAuthority;
  readonly forwards = new PortForwards();
  readonly callbacks = new CallbackHub();
  private readonly contexts = new Map<string, SandboxNetContext>();
  private readonly listeners = new Map<number, TransparentListener>();
  /** Proxied connections per sandbox, over every listener. */
  private readonly connections: ConnectionCap;
  private ready?: Promise<void>;
  private dns?: { port: number; close(): void };
  private upstream?: Upstream;
  private readonly pinsDir: string;

  constructor(
    readonly cfg: NetConfig,
    private readonly reporter: NetReporter,
    private readonly telemetry: Telemetry = NO_TELEMETRY,
  ) {
    this.host = new HostNet({ slot: cfg.slot, egressInterface: cfg.egressInterface });
    this.links = new SandboxLinks(this.host, join(cfg.dataDir, 'net', 'links'));
    this.pinsDir = join(cfg.dataDir, 'net', 'pins');
    this.ca = new CertAuthority(join(cfg.dataDir, 'net-ca'));
    this.connections = new ConnectionCap(cfg.maxConnections, cfg.idleTimeoutMs);
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

  private get claimFile(): string {
    return `/run/cordon-net/slot-${this.cfg.slot}.json`;
  }

  /** The other live daemon that claimed this slot, if any (a claim whose pid is gone is stale). */
  private otherOwner(): { dataDir: string; pid: number } | undefined {
    try {
      const c = JSON.parse(readFileSync(this.claimFile, 'utf8')) as { dataDir: string; pid: number };
      if (c.pid === process.pid || c.dataDir === this.cfg.dataDir) return undefined;
      process.kill(c.pid, 0);
      return c;
    } catch {
      return undefined;
    }
  }

  private async init(): Promise<void> {
    const other = this.otherOwner();
    if (other) throw new CordonError('unavailable', `network slot ${this.cfg.slot} is in use by the cordon daemon with data in ${other.dataDir} (pid ${other.pid}); start this daemon with another --network-slot`);
    mkdirSync('/run/cordon-net', { recursive: true });
    writeFileSync(this.claimFile, JSON.stringify({ dataDir: this.cfg.dataDir, pid: process.pid }));
    await this.ca.init();
    await this.host.setupLinks();
    const local = this.host.egressIp ?? this.host.proxyIp;
    const ca = await upstreamCas(this.cfg.upstreamCaFile);
    this.upstream = {
      dns: new UpstreamDns(this.host.egressIp),
      localAddress: local,
      http: new http.Agent({ keepAlive: true, localAddress: local }),
      https: new https.Agent({ keepAlive: true, localAddress: local, ca }),
      idleTimeoutMs: this.cfg.idleTimeoutMs,
    };
    this.dns = await startDnsServer(this.host.proxyIp, (ip) => this.ctxFor(ip), this.upstream.dns, (ip, name, _ok, reason) => {
      const l = this.links.bySource(ip);
      if (l) this.reporter(l.id, { method: 'DNS', url: `dns:${name}`, host: name, status: 0, request_bytes: 0, response_bytes: 0, duration_ms: 0, blocked: true, block_reason: reason });
    }, (outcome) => this.telemetry.dnsAnswer(outcome));
    for (const p of [80, 443]) await this.listen(p, false);
    await this.host.setupTable(new Map([...this.listeners].map(([o, l]) => [o, l.port])), this.dns.port);
  }

  private async listen(orig: number, addToTable = true): Promise<void> {
    if (this.listeners.has(orig)) return;
    const l = new TransparentListener(orig, (ip) => this.ctxFor(ip), this.ca, this.upstream!, this.connections);
    this.listeners.set(orig, l);
    await l.listen(this.host.proxyIp);
    if (addToTable) await this.host.addPort(orig, l.port);
  }

  private ctxFor(ip: string): SandboxNetContext | undefined {
    const l = this.links.bySource(ip);
    return l ? this.contexts.get(l.id) : undefined;
  }

  /**
   * At start-up, before any API request: re-adopt the links of networked sandboxes that are still
   * running (rebuilding host state: table, resolver, listeners, forwards) and delete links,
   * namespaces, saved state and, when nothing is left, the table of everything else.
   * Returns the ids whose network could not be restored (they keep running with no network).
   */
  async restore(running: RunningNetSandbox[], log: (msg: string) => void): Promise<string[]> {
    const keep = running.filter((r) => needsNamespace(r.network));
    const lost: string[] = [];
    const other = this.otherOwner();
    if (other) {
      // Another live daemon uses this slot: its links are not ours to sweep.
      log(`network slot ${this.cfg.slot} is in use by the cordon daemon with data in ${other.dataDir} (pid ${other.pid}); leaving its links alone`);
      for (const id of await this.links.saved()) if (!keep.some((k) => k.id === id)) await this.links.forget(id);
      return keep.map((k) => k.id);
    }
    if (keep.length) {
      await this.ensure();
      for (const r of keep) {
        const spec = r.network!;
        const link = await this.links.adopt(r.id, spec.mtu, r.relink);
        if (!link) {
          lost.push(r.id);
          continue;
        }
        try {
          this.setPolicy(r.id, spec);
          for (const p of new Policy(spec).ports()) await this.listen(p);
          for (const f of spec.ports) await this.forwards.add(r.id, link.sandboxIp, f);
        } catch (e) {
          log(`sandbox ${r.id}: restoring its network partly failed: ${(e as Error).message}`);
        }
      }
    }
    const kept = this.links.all();
    const gone = await this.host.sweep(new Set(kept.map((l) => l.hostIf)), new Set(kept.map((l) => l.netns)));
    const ids = new Set(kept.map((l) => l.id));
    for (const id of await this.links.saved()) if (!ids.has(id)) await this.links.forget(id);
    for (const f of (() => { try { return readdirSync(this.pinsDir); } catch { return []; } })()) if (!ids.has(f.replace(/\.json$/, ''))) rmSync(join(this.pinsDir, f), { force: true });
    if (gone.length) log(`removed leftover sandbox links and namespaces: ${gone.join(', ')}`);
    if (!kept.length && (await this.host.hasTable())) {
      await this.host.cleanup();
      log(`removed leftover network table ${this.host.table}`);
    }
    if (kept.length) log(`re-adopted the network of ${kept.length} running sandbox(es)`);
    return lost;
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
    mkdirSync(this.pinsDir, { recursive: true });
    const pins = old?.pins ?? SavedPins.load(join(this.pinsDir, `${id}.json`));
    for (const name of [...pins.keys()]) if (!policy.name(name).allowed) pins.delete(name);
    this.contexts.set(id, {
      id, policy, pins,
      upstream: spec.dnsServers.length ? spec.dnsServers : this.cfg.dnsServers,
      secrets: spec.secrets, rules: spec.rules,
      report: (e) => this.reporter(id, e),
      ask: (summary, timeoutMs) => this.callbacks.ask(id, summary, timeoutMs),
    });
  }

  async updatePorts(spec: NetworkSpec): Promise<void> {
    for (const p of new Policy(spec).ports()) await this.listen(p);
  }

  async detach(id: string): Promise<void> {
    const pins = this.contexts.get(id)?.pins;
    if (pins instanceof SavedPins) pins.discard();
    this.contexts.delete(id);
    this.forwards.remove(id);
    rmSync(join(this.pinsDir, `${id}.json`), { force: true });
    await this.links.destroy(id);
  }

  /** /etc/resolv.conf for the sandbox: any server works (port 53 is steered to the daemon). */
  resolvConf(link: SandboxLink): string {
    return `nameserver ${link.hostIp}\noptions ndots:0 attempts:2 timeout:2\n`;
  }

  async close(): Promise<void> {
    for (const c of this.contexts.values()) if (c.pins instanceof SavedPins) c.pins.flush();
    for (const l of this.listeners.values()) l.close();
    this.listeners.clear();
    this.dns?.close();
    this.upstream?.http.destroy();
    this.upstream?.https.destroy();
    for (const id of this.contexts.keys()) this.forwards.remove(id);
    // Sandboxes outlive the daemon: their links stay, guarded by the table, until the next start
    // re-adopts them. With none left, nothing of this slot stays on the host.
    if (this.ready && !this.links.all().length) {
      await this.host.cleanup();
      rmSync(this.claimFile, { force: true });
    }
  }
}
