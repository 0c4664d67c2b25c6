// `cordon mcp`: the MCP server over stdio for desktop MCP clients. A thin process: the tools call the
// running daemon through the cordon SDK. Stdout carries only the protocol; everything else goes to stderr.
import type { Command } from 'commander';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { CordonError } from '../../errors/registry.js';
import { createMcpServer } from '../../mcp/server.js';
import { Cordon } from '../../sdk/client.js';
import { VERSION } from '../../version.js';
import { apiKeyFromFile } from '../serve.js';

/** Diagnostics on stderr, as text or (with --json) one JSON object a line. */
function logger(json: boolean) {
  return (level: 'info' | 'warn' | 'error', msg: string, extra: Record<string, unknown> = {}) =>
    process.stderr.write(json ? `${JSON.stringify({ time: new Date().toISOString(), level, msg, ...extra })}\n` : `cordon mcp: ${msg}\n`);
}

export function registerMcp(program: Command): void {
  program
    .command('mcp')
    .description('serve the MCP tools over stdio (for Claude Desktop, Cursor, ...) against a running daemon')
    .option('--url <url>', 'daemon address (default $CORDON_URL or http://127.0.0.1:7070)')
    .option('--api-key <key>', 'API key (default $CORDON_API_KEY)')
    .option('--api-key-file <file>', 'read the API key from the first line of this file')
    .option('--json', 'write diagnostics to stderr as JSON lines (stdout is always the protocol)')
    .action(async (o: { url?: string; apiKey?: string; apiKeyFile?: string; json?: boolean }) => {
      const log = logger(!!o.json);
      // Nothing but the protocol may reach stdout: a stray console.log would corrupt the stream.
      console.log = console.info = console.debug = console.warn = (...args: unknown[]) => log('info', args.map(String).join(' '));
      let apiKey: string | undefined;
      try {
        if (o.url !== undefined && !/^https?:\/\/[^\s/]+/.test(o.url)) throw new CordonError('invalid_argument', `--url must look like http://127.0.0.1:7070, got ${o.url}`);
        apiKey = o.apiKey ?? apiKeyFromFile(o.apiKeyFile) ?? process.env.CORDON_API_KEY ?? undefined;
      } catch (e) {
        log('error', (e as Error).message);
        process.exit(e instanceof CordonError ? e.exitCode : 64);
      }
      const cordon = new Cordon({ url: o.url, apiKey });
      const server = createMcpServer(cordon, VERSION);
      const transport = new StdioServerTransport();
      const shutdown = async () => {
        await server.close().catch(() => {});
        await cordon.close().catch(() => {});
        process.exit(0);
      };
      process.stdin.on('end', shutdown);
      process.on('SIGINT', shutdown).on('SIGTERM', shutdown);
      await server.connect(transport);
      // Say early when the daemon cannot be reached; the tools would answer `unavailable` anyway.
      cordon.health().then(
        (h) => log('info', `serving over stdio; daemon ${cordon.http.base} is ${h.status} (version ${h.version})`, { daemon: cordon.http.base }),
        (e: Error) => log('warn', e.message, { daemon: cordon.http.base }),
      );
    });
}
