import { CordonError, errors } from '../errors/registry.js';
import { emptyNetwork, needsNamespace, type NetworkSpec, type PortForward } from '../net/types.js';
import type { SandboxManager } from './sandbox-manager.js';
import { hasContainer } from './state-machine.js';
import type { SandboxRecord } from './types.js';

/**
 * Changes to the network of an existing sandbox: its rules and its port forwards. Each is stored
 * with the spec (so a restart re-creates it) and, on a running sandbox, applied at once.
 */
export class SandboxNetwork {
  constructor(private readonly mgr: SandboxManager) {}

  /**
   * Replace a sandbox's network rules (allow/deny/rules/mode); stored with the spec, so they also
   * hold after a daemon restart, and applied at once to new connections when it runs.
   */
  async setNetwork(id: string, next: NetworkSpec, message: string): Promise<SandboxRecord> {
    return this.mgr.exclusive(id, async () => {
      const rec = this.mgr.get(id);
      const cur = rec.spec.network;
      if (!cur || !this.mgr.net) throw errors.invalid('network', 'the sandbox was created without a network; create it with --network allowlist or open to change rules');
      // A sandbox paused to disk has no namespace until it resumes, which makes one under the stored spec.
      if (needsNamespace(next) && !this.mgr.net.attached(id) && hasContainer(rec.state) && !(await this.mgr.pauses.onDisk(id))) {
        throw errors.wrongState(id, rec.state, 'network', 'It runs without a network namespace; stop and start it to apply network rules.');
      }
      if (next.mode !== 'none') this.mgr.net.validate(next);
      this.mgr.store.update(id, { spec: { ...rec.spec, network: next } });
      if (this.mgr.net.attached(id)) await this.mgr.net.updatePolicy(id, next);
      this.mgr.store.addEvent(id, 'network-policy', message);
      return this.mgr.get(id);
    });
  }

  /**
   * Add a port forward (ports in) to a sandbox; on a running sandbox the host listener opens at
   * once. Stored with the spec, so a restart of the sandbox or of the daemon re-creates it.
   */
  async addPort(id: string, f: PortForward): Promise<PortForward> {
    return this.mgr.exclusive(id, async () => {
      const rec = this.mgr.get(id);
      if (!this.mgr.net) throw errors.invalid('ports', 'this daemon has no network capability');
      const cur = rec.spec.network ?? emptyNetwork('none');
      const mine = cur.ports.find((p) => p.local === f.local);
      if (mine) throw new CordonError('already_exists', `ports: local port ${f.local} already forwards to port ${mine.remote} of sandbox ${id}; remove it first with \`cordon port rm ${id} ${f.local}\``, { local: f.local });
      const other = this.mgr.store.list().find((r) => r.id !== id && r.spec.network?.ports.some((p) => p.local === f.local));
      if (other) throw new CordonError('already_exists', `ports: local port ${f.local} is already forwarded to sandbox ${other.id}; pick another local port`, { local: f.local, sandbox_id: other.id });
      const next = { ...cur, ports: [...cur.ports, f] };
      const attached = this.mgr.net.attached(id);
      if (!attached && hasContainer(rec.state) && !(await this.mgr.pauses.onDisk(id))) {
        throw errors.wrongState(id, rec.state, 'add a port forward', 'It runs without a network namespace (network none and no ports at start); stop it, add the port, and start it again.');
      }
      if (attached) await this.mgr.net.addForward(id, f);
      this.mgr.store.update(id, { spec: { ...rec.spec, network: next } });
      this.mgr.store.addEvent(id, 'network-ports', `port forward ${f.address}:${f.local} -> ${f.remote} added`, { local: f.local, remote: f.remote, address: f.address });
      return f;
    });
  }

  /** Remove the forward on LOCAL: the host listener and its connections close at once. */
  async removePort(id: string, local: number): Promise<PortForward> {
    return this.mgr.exclusive(id, async () => {
      const rec = this.mgr.get(id);
      const cur = rec.spec.network;
      const f = cur?.ports.find((p) => p.local === local);
      if (!cur || !f) throw new CordonError('not_found', `ports: sandbox ${id} has no forward on local port ${local}; list them with \`cordon port ls ${id}\``, { local });
      this.mgr.net?.removeForward(id, local);
      this.mgr.store.update(id, { spec: { ...rec.spec, network: { ...cur, ports: cur.ports.filter((p) => p.local !== local) } } });
      this.mgr.store.addEvent(id, 'network-ports', `port forward ${f.address}:${f.local} -> ${f.remote} removed`, { local: f.local, remote: f.remote, address: f.address });
      return f;
    });
  }
}
