import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * A loopback TCP relay in front of the test registry. It counts blob GETs per digest and can cut
 * every connection once a given number of response bytes has passed (a registry dying mid-pull).
 */
export interface TcpProxy {
  host: string;
  blobGets: Map<string, number>;
  /** Call `fn` once after `bytes` more response bytes, holding back everything from then on. */
  cutAfter(bytes: number, fn: () => Promise<void> | void): void;
  /** Relay again after a cut. */
  resume(): void;
  close(): Promise<void>;
}

export async function startProxy(target: string): Promise<TcpProxy> {
  const [thost, tport] = target.split(':');
  const sockets = new Set<Socket>();
  const blobGets = new Map<string, number>();
  let cut: { left: number; fn: () => Promise<void> | void } | undefined;
  let frozen = false;
  const server: Server = createServer((client) => {
    const upstream = connect(Number(tport), thost);
    sockets.add(client).add(upstream);
    client.on('data', (d: Buffer) => {
      for (const m of d.toString('latin1').matchAll(/GET \/v2\/\S+\/blobs\/(sha256:[a-f0-9]{64})/g)) blobGets.set(m[1], (blobGets.get(m[1]) ?? 0) + 1);
      if (!frozen) upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (frozen) return;
      if (cut) {
        cut.left -= d.length;
        if (cut.left <= 0) {
          frozen = true;
          const { fn } = cut;
          cut = undefined;
          void Promise.resolve(fn()).then(() => {
            for (const s of sockets) s.destroy();
          });
          return;
        }
      }
      client.write(d);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    host: `127.0.0.1:${(server.address() as { port: number }).port}`,
    blobGets,
    cutAfter(bytes, fn) {
      frozen = false;
      cut = { left: bytes, fn };
    },
    resume() {
      frozen = false;
      cut = undefined;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
