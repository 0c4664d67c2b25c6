// The cost of the MCP layer on a command round trip: the same `sh -c true` in the same sandbox through
// the SDK's REST exec (the peer), MCP run_command over Streamable HTTP (POST /mcp: a fresh stateless
// server per request, then the tool's own call to the REST API on loopback) and over stdio
// (`cordon mcp` as a desktop client starts it), interleaved sample by sample so all three see the same
// machine. BENCH_RUNS (default 100) sets the samples; BENCH_RUNTIMES (default crun,runsc) the runtimes.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { Sandbox } from '../src/sdk/index.js';
import { CLI, startDaemon } from '../test/helpers/daemon.js';
import { pct } from './lib/stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 100);
const RUNTIMES = (process.env.BENCH_RUNTIMES ?? 'crun,runsc').split(',') as ('runsc' | 'crun')[];
const KEY = 'bench-mcp-key-0123456789abcdef';

function row(name: string, xs: number[]): string {
  const f = (p: number) => pct(xs, p).toFixed(2).padStart(8);
  return `${name.padEnd(34)} p50 ${f(50)} ms  p90 ${f(90)} ms  p99 ${f(99)} ms  (n=${xs.length})`;
}
const ratio = (name: string, a: number[], b: number[]) => `  ${name.padEnd(32)} ${[50, 90, 99].map((p) => `p${p} ${(pct(a, p) / pct(b, p)).toFixed(3)}x`).join('   ')}`;

async function timeIt(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

async function main(): Promise<void> {
  const d = await startDaemon('bench-mcp', { apiKey: KEY });
  const http = new Client({ name: 'bench-http', version: '1' });
  const stdio = new Client({ name: 'bench-stdio', version: '1' });
  const boxes: Sandbox[] = [];
  try {
    await http.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${KEY}` } } }));
    await stdio.connect(new StdioClientTransport({ command: process.execPath, args: [CLI, 'mcp', '--url', d.url, '--api-key', KEY], stderr: 'ignore' }));
    console.log(`MCP round trip: ${RUNS} samples per figure; the same sh -c true through REST exec, MCP over HTTP and over stdio`);
    for (const runtime of RUNTIMES) {
      const s = await d.client.create({ runtime });
      boxes.push(s);
      const viaRest = () => s.exec(['/bin/sh', '-c', 'true']);
      const viaMcp = (c: Client) => async () => {
        const r = (await c.callTool({ name: 'run_command', arguments: { sandbox_id: s.id, command: 'true' } })) as { isError?: boolean; content: { text?: string }[] };
        if (r.isError) throw new Error(r.content[0]?.text);
      };
      const sides = [viaRest, viaMcp(http), viaMcp(stdio)];
      const xs: number[][] = [[], [], []];
      for (let i = 0; i < 10; i++) for (const f of sides) await f();
      for (let i = 0; i < RUNS; i++) {
        // Rotate which side goes first so none always gets the quieter moment.
        for (let k = 0; k < 3; k++) {
          const j = (i + k) % 3;
          xs[j].push(await timeIt(sides[j]));
        }
      }
      console.log(`\n${runtime}`);
      console.log(row('REST exec (SDK)', xs[0]));
      console.log(row('MCP run_command over HTTP', xs[1]));
      console.log(row('MCP run_command over stdio', xs[2]));
      console.log(ratio('HTTP MCP / REST', xs[1], xs[0]));
      console.log(ratio('stdio MCP / REST', xs[2], xs[0]));
    }
  } finally {
    await http.close().catch(() => {});
    await stdio.close().catch(() => {});
    for (const s of boxes) await s.remove().catch(() => {});
    await d.cleanup();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
