import type { IncomingMessage, ServerResponse } from 'node:http';

/**
 * Traffic for a sandbox port other than envd's. The seam for the network capability: once sandboxes
 * have a network namespace, an implementation connects to the sandbox's address and pipes the
 * request through. Until then no port inside a sandbox is reachable, and callers learn that plainly.
 */
export interface PortProxy {
  handle(req: IncomingMessage, res: ServerResponse, sandboxId: string, port: number): void | Promise<void>;
}

/** The proxy used while sandboxes have no network: a 502 naming the unreachable port, as E2B's proxy answers for a closed port. */
export const noNetworkProxy: PortProxy = {
  handle(req, res, sandboxId, port) {
    req.resume();
    res.writeHead(502, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        code: 502,
        message: `port ${port} in sandbox ${sandboxId} is not reachable: the port is not open because cordon sandboxes have no network yet; only envd (port 49983) is served`,
        sandboxId,
        port,
      }),
    );
  },
};
