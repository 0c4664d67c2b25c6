import { connect, createServer, type Server, type Socket } from 'node:net';
import { CordonError } from '../errors/registry.js';
import type { PortForward } from './types.js';

// Ports in: a host listener (127.0.0.1 by default) piping each connection to the sandbox's port.

interface Forward {
  srv: Server;
  conns: Set<Socket>;
}

export class PortForwards {
  private readonly servers = new Map<string, Map<number, Forward>>();

  async add(id: string, sandboxIp: string, f: PortForward): Promise<void> {
    const mine = this.servers.get(id) ?? new Map<number, Forward>();
    this.servers.set(id, mine);
    if (mine.has(f.local)) return;
    const conns = new Set<Socket>();
    const srv = createServer((c) => {
      const up = connect(f.remote, sandboxIp);
      conns.add(c).add(up);
      c.pipe(up).pipe(c);
      const end = () => (c.destroy(), up.destroy(), conns.delete(c), conns.delete(up));
      c.on('error', end).on('close', end);
      up.on('error', end).on('close', end);
    });
    await new Promise<void>((resolve, reject) => {
      srv.once('error', (e: NodeJS.ErrnoException) =>
        reject(e.code === 'EADDRINUSE'
          ? new CordonError('already_exists', `ports: ${f.address}:${f.local} is already in use on the host; pick another local port`, { local: f.local })
          : new CordonError('invalid_argument', `network.ports: cannot listen on ${f.address}:${f.local} (${e.code ?? e.message})`)));
      srv.listen(f.local, f.address, () => resolve());
    });
    if (!this.servers.has(id)) this.servers.set(id, mine);
    mine.set(f.local, { srv, conns });
  }

  /** Close the listener(s) and every connection through them, so the port is really closed. */
  remove(id: string, local?: number): void {
    const mine = this.servers.get(id);
    if (!mine) return;
    for (const [port, fw] of mine) {
      if (local !== undefined && port !== local) continue;
      fw.srv.close();
      for (const c of fw.conns) c.destroy();
      mine.delete(port);
    }
    if (!mine.size) this.servers.delete(id);
  }
}
