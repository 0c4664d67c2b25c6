import { readFile } from 'node:fs/promises';
import type { NetworkAttachment, NetworkDriver, RootfsDirs } from '../engine/drivers.js';
import type { NetworkService, RunningNetSandbox } from './service.js';
import { networkBinds } from './sandbox-files.js';
import type { NetworkSpec, PortForward } from './types.js';

/**
 * The engine's network driver on this host: a network namespace per sandbox, linked to the daemon's
 * policy enforcement (NetworkService).
 */
export class NamespaceNetworkDriver implements NetworkDriver {
  constructor(readonly service: NetworkService) {}

  validate(spec: NetworkSpec): void {
    this.service.validate(spec);
  }

  async attach(id: string, spec: NetworkSpec, dirs: RootfsDirs): Promise<NetworkAttachment> {
    const link = await this.service.attach(id, spec);
    try {
      return { netnsPath: link.netnsPath, binds: await networkBinds(this.service, link, dirs.bundle, dirs.rootfs) };
    } catch (e) {
      await this.service.detach(id);
      throw e;
    }
  }

  detach(id: string): Promise<void> {
    return this.service.detach(id);
  }

  attached(id: string): boolean {
    return !!this.service.links.get(id);
  }

  async updatePolicy(id: string, spec: NetworkSpec): Promise<void> {
    this.service.setPolicy(id, spec);
    await this.service.updatePorts(spec);
  }

  async addForward(id: string, f: PortForward): Promise<void> {
    const link = this.service.links.get(id);
    if (link) await this.service.forwards.add(id, link.sandboxIp, f);
  }

  removeForward(id: string, local: number): void {
    this.service.forwards.remove(id, local);
  }

  /** From the host end of the sandbox's veth (kernel counters): what it sends, the sandbox receives. */
  async counters(id: string): Promise<{ rx: number; tx: number }> {
    const link = this.service.links.get(id);
    if (!link) return { rx: 0, tx: 0 };
    const stat = (name: string) => readFile(`/sys/class/net/${link.hostIf}/statistics/${name}`, 'utf8').then(Number, () => 0);
    const [hostTx, hostRx] = await Promise.all([stat('tx_bytes'), stat('rx_bytes')]);
    return { rx: hostTx || 0, tx: hostRx || 0 };
  }

  restore(running: RunningNetSandbox[], log: (msg: string) => void): Promise<string[]> {
    return this.service.restore(running, log);
  }
}
