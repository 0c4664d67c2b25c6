// The MCP server of cordon: one set of tools and resources, the same for every transport (stdio in
// `cordon mcp`, Streamable HTTP at /mcp on the daemon). Every tool works through the cordon SDK, so
// both transports get the REST API's validation, limits, authentication and request logs.
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { Cordon } from '../sdk/client.js';
import { registerCommandTools } from './tools-commands.js';
import { registerFileTools } from './tools-files.js';
import { registerSandboxTools } from './tools-sandboxes.js';

const INSTRUCTIONS =
  'cordon runs untrusted code in isolated sandboxes. Create one with create_sandbox, then run_command, ' +
  'start_process + read_process_output, and the file tools with its id; kill_sandbox when done. Errors ' +
  'come back as results with isError and an error code (not_found, invalid_argument, ...) and say what to do.';

export function createMcpServer(cordon: Cordon, version: string): McpServer {
  const server = new McpServer({ name: 'cordon', version }, { instructions: INSTRUCTIONS, capabilities: { tools: {}, resources: {} } });
  registerSandboxTools(server, cordon);
  registerCommandTools(server, cordon);
  registerFileTools(server, cordon);
  return server;
}
