import { connect, createServer, type Server } from 'node:net';
import { CordonError } from '../errors/registry.js';
import type { PortForward } from './types.js';

// Ports in: a host listener (127.0.0.1 by default) piping each connection to the sandbox's port.

export class PortForwards {
  private readonly servers = new Map<string, Map<number, Server>>();

  async add(id: string, sandboxIp: string, f: PortForward): Promise<void> {
    const mine = this.servers.get(id) ?? new Map<number, Server>();
    this.servers.set(id, mine);
    if (mine.has(f.local)) return;
    const srv = createServer((c) => {
      const up = connect(f.remote, sandboxIp);
      c.pipe(up).pipe(c);
      const end = () => (c.destroy(), up.destroy());
      c.on('error', end);
      up.on('error', end);
    });
    await new Promise<void>((resolve, reject) => {
      srv.once('error', (e: NodeJS.ErrnoException) => reject(new CordonError('invalid_argument', `network.ports: cannot listen on ${f.address}:${f.local} (${e.code ?? e.message})`)));
      srv.listen(f.local, f.address, () => resolve());
    });
    mine.set(f.local, srv);
  }

  remove(id: string, local?: number): void {
    const mine = this.servers.get(id);
    if (!mine) return;
    for (const [port, srv] of mine) {
      if (local !== undefined && port !== local) continue;
      srv.close();
      mine.delete(port);
    }
    if (!mine.size) this.servers.delete(id);
  }
}
