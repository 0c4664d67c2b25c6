// POST /mcp: the MCP server over Streamable HTTP, behind the API key like every route (the onRequest
// hook of server.ts covers it). Stateless: each request gets a fresh server and transport, so the
// daemon holds no per-client MCP session to bound, expire or lose on restart; everything a tool
// refers to (sandboxes, processes, files) already lives in the daemon under its own id.
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { CordonError } from '../../errors/registry.js';
import { MCP_LIMITS } from '../../mcp/limits.js';
import { createMcpServer } from '../../mcp/server.js';
import { Cordon } from '../../sdk/client.js';
import type { ApiDeps, TypedApp } from '../server.js';

/** Idle MCP servers kept for reuse (as many as requests are usually in flight at once). */
const IDLE_SERVERS_MAX = 16;

/** The daemon's own address as a client reaches it: a wildcard listen is reached on loopback. */
function selfUrl(addr: AddressInfo | string | null): string {
  if (!addr || typeof addr === 'string') throw new CordonError('unavailable', 'the daemon is not listening on TCP; /mcp needs --listen host:port');
  const host = addr.address === '0.0.0.0' ? '127.0.0.1' : addr.address === '::' ? '::1' : addr.address;
  return `http://${host.includes(':') ? `[${host}]` : host}:${addr.port}`;
}

export function registerMcpRoute(app: TypedApp, { cfg, version }: ApiDeps): void {
  // The tools call the daemon's REST API on its own socket through the SDK, as `cordon mcp` does
  // from outside: one implementation of every tool, with the API's validation, limits and logs.
  let self: Cordon | undefined;
  const client = () => (self ??= new Cordon({ url: selfUrl((app as unknown as FastifyInstance).server.address()), apiKey: cfg.apiKey }));
  app.addHook('onClose', async () => {
    await self?.close();
  });

  // Building a server registers every tool (milliseconds of schema work), so idle ones are reused: a
  // stateless server keeps nothing of its last request once its transport is closed.
  const idle: McpServer[] = [];
  app.post('/mcp', { bodyLimit: MCP_LIMITS.httpBodyMax, schema: { summary: 'Model Context Protocol (Streamable HTTP, stateless, JSON responses)', hide: true } }, async (req, reply) => {
    let server = idle.pop();
    if (!server || server.isConnected()) server = createMcpServer(client(), version);
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    reply.hijack();
    reply.raw.on('close', () => {
      void server.close().then(
        () => idle.length < IDLE_SERVERS_MAX && idle.push(server),
        () => {},
      );
    });
    await server.connect(transport);
    await transport.handleRequest(req.raw, reply.raw, req.body);
  });

  // Stateless: no server-to-client stream (GET) and no session to end (DELETE).
  const notAllowed = { jsonrpc: '2.0', error: { code: -32000, message: 'method not allowed: this MCP endpoint is stateless; send JSON-RPC requests with POST /mcp' }, id: null };
  app.get('/mcp', { schema: { hide: true } }, async (_req, reply) => reply.status(405).header('allow', 'POST').send(notAllowed));
  app.delete('/mcp', { schema: { hide: true } }, async (_req, reply) => reply.status(405).header('allow', 'POST').send(notAllowed));
}
