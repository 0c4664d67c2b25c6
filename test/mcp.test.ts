// The MCP server through the official SDK's own Client, over stdio (`cordon mcp` spawned the way a
// desktop client does) and over Streamable HTTP (POST /mcp with the API key; refused without it):
// tools listed alike on both, create, run, files and a resource read, a background process's output
// paged by offset, snapshot and create-from-snapshot, kill, errors as isError results with cordon's
// code. Hostile: 50 MiB of output is cut to head + tail with the marker while the daemon's peak
// memory stays far below it; a huge file is read only up to the bound.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CLI, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { until } from './helpers/assert.js';
import { TRUNCATION_MARKER } from '../src/mcp/bounded-output.js';
import { MCP_LIMITS } from '../src/mcp/limits.js';

const KEY = 'mcp-test-key-0123456789abcdef';
let d: TestDaemon;
let stdio: Client;
let http: Client;
let stdioLog = '';
let keyDir: string;
let sbx: string;
const extra: string[] = [];

type Result = { isError?: boolean; content: { type: string; text?: string; uri?: string; resource?: { uri: string; text?: string; blob?: string } }[]; structuredContent?: Record<string, unknown> };

async function call(c: Client, name: string, args: Record<string, unknown>): Promise<Result> {
  return (await c.callTool({ name, arguments: args }, undefined, { timeout: 300_000 })) as Result;
}
/** A tool call that must succeed; its structured result. */
async function ok<T = Record<string, unknown>>(c: Client, name: string, args: Record<string, unknown>): Promise<T> {
  const r = await call(c, name, args);
  assert.ok(!r.isError, `${name} failed: ${r.content[0]?.text}`);
  return r.structuredContent as T;
}

function memKb(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]);
}

before(async () => {
  d = await startDaemon('mcp', { apiKey: KEY });
  keyDir = mkdtempSync(join(tmpdir(), 'cordon-mcp-'));
  writeFileSync(join(keyDir, 'key'), `${KEY}\n`, { mode: 0o600 });
  const env = { ...process.env } as Record<string, string>;
  delete env.CORDON_API_KEY;
  delete env.CORDON_URL;
  const stdioTransport = new StdioClientTransport({ command: process.execPath, args: [CLI, 'mcp', '--url', d.url, '--api-key-file', join(keyDir, 'key')], env, stderr: 'pipe' });
  stdioTransport.stderr?.on('data', (b) => (stdioLog += b));
  stdio = new Client({ name: 'cordon-test-stdio', version: '1' });
  http = new Client({ name: 'cordon-test-http', version: '1' });
  await Promise.all([
    stdio.connect(stdioTransport),
    http.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${KEY}` } } })),
  ]);
});

after(async () => {
  await stdio?.close().catch(() => {});
  await http?.close().catch(() => {});
  for (const id of [sbx, ...extra]) if (id) await d.client.remove(id, { force: true }).catch(() => {});
  await d?.cleanup();
  if (keyDir) rmSync(keyDir, { recursive: true, force: true });
});

test('both transports list the same tools, each with a described input schema, and the file resource template', async () => {
  const [a, b] = await Promise.all([stdio.listTools(), http.listTools()]);
  const names = a.tools.map((t) => t.name).sort();
  assert.deepEqual(names, b.tools.map((t) => t.name).sort());
  for (const want of ['create_sandbox', 'create_sandbox_from_snapshot', 'list_sandboxes', 'kill_sandbox', 'run_command', 'start_process', 'read_process_output', 'kill_process', 'read_file', 'write_file', 'list_files', 'upload_file', 'download_file', 'create_snapshot'])
    assert.ok(names.includes(want), `missing tool ${want}`);
  const run = a.tools.find((t) => t.name === 'run_command')!;
  assert.deepEqual(run.inputSchema.required?.sort(), ['command', 'sandbox_id']);
  assert.match(String((run.inputSchema.properties as Record<string, { description?: string }>).command.description), /sh -c/);
  const templates = await http.listResourceTemplates();
  assert.equal(templates.resourceTemplates[0]?.uriTemplate, 'cordon://sandboxes/{sandbox_id}/files/{+path}');
  // Logged once the stdio server's health call to the daemon answers, which may come after the listing.
  await until('the stdio server to log that it serves', () => /serving over stdio/.test(stdioLog), 15_000);
  assert.match(stdioLog, /serving over stdio/);
});

test('/mcp refuses a request without the API key, or with a wrong one', async () => {
  const init = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } } });
  const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  for (const auth of [{}, { authorization: 'Bearer wrong-key-0123456789' }] as Record<string, string>[]) {
    const res = await fetch(`${d.url}/mcp`, { method: 'POST', headers: { ...headers, ...auth }, body: init });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { code: string }).code, 'unauthenticated');
  }
  // Bodies are bounded: past 8 MiB the daemon answers 413 without reading on.
  const big = await fetch(`${d.url}/mcp`, { method: 'POST', headers: { ...headers, authorization: `Bearer ${KEY}` }, body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'write_file', arguments: { content: 'z'.repeat(MCP_LIMITS.httpBodyMax) } } }) });
  assert.equal(big.status, 413);
  assert.equal(((await big.json()) as { code: string }).code, 'payload_too_large');
  const noKey = new Client({ name: 'nokey', version: '1' });
  await assert.rejects(noKey.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`))));
});

test('create over stdio, then run over HTTP: exit code, stdout and stderr apart', async () => {
  const created = await ok<{ id: string; state: string; memory_bytes: number; network: string }>(stdio, 'create_sandbox', { template: 'base', memory: '512m', timeout: '15m', network: { mode: 'none' } });
  sbx = created.id;
  assert.equal(created.state, 'running');
  assert.equal(created.memory_bytes, 512 * 1024 * 1024);
  assert.equal(created.network, 'none');
  const listed = await ok<{ sandboxes: { id: string }[] }>(http, 'list_sandboxes', {});
  assert.ok(listed.sandboxes.some((s) => s.id === sbx));

  const r = await ok<{ exit_code: number; stdout: string; stderr: string; truncated: boolean }>(http, 'run_command', { sandbox_id: sbx, command: 'echo hello $WHO; echo oops >&2; exit 3', env: { WHO: 'mcp' } });
  assert.equal(r.exit_code, 3);
  assert.equal(r.stdout, 'hello mcp\n');
  assert.equal(r.stderr, 'oops\n');
  assert.equal(r.truncated, false);
  const slow = await ok<{ timed_out: boolean }>(stdio, 'run_command', { sandbox_id: sbx, command: 'sleep 30', timeout: 1 });
  assert.equal(slow.timed_out, true);
});

test('files: write, read, list, upload with a resource link, read the resource, download', async () => {
  await ok(stdio, 'write_file', { sandbox_id: sbx, path: '/work/dir/notes.txt', content: 'first line\n' });
  await ok(http, 'write_file', { sandbox_id: sbx, path: '/work/dir/notes.txt', content: 'second line\n', append: true });
  const read = await ok<{ content: string; truncated: boolean; encoding: string }>(http, 'read_file', { sandbox_id: sbx, path: '/work/dir/notes.txt' });
  assert.deepEqual([read.content, read.truncated, read.encoding], ['first line\nsecond line\n', false, 'utf8']);
  const page = await ok<{ content: string; next_offset: number; truncated: boolean }>(stdio, 'read_file', { sandbox_id: sbx, path: '/work/dir/notes.txt', offset: 6, max_bytes: 4 });
  assert.deepEqual([page.content, page.next_offset, page.truncated], ['line', 10, true]);

  const bin = Buffer.from([0, 1, 2, 255, 254, 10]);
  const up = await call(stdio, 'upload_file', { sandbox_id: sbx, path: '/work/dir/blob.bin', data_base64: bin.toString('base64') });
  assert.ok(!up.isError, up.content[0]?.text);
  const link = up.content.find((c) => c.type === 'resource_link')!;
  assert.equal(link.uri, `cordon://sandboxes/${sbx}/files/work/dir/blob.bin`);
  const res = await http.readResource({ uri: link.uri! });
  assert.deepEqual(Buffer.from((res.contents[0] as { blob: string }).blob, 'base64'), bin);
  const text = await stdio.readResource({ uri: `cordon://sandboxes/${sbx}/files/work/dir/notes.txt` });
  assert.equal((text.contents[0] as { text: string }).text, 'first line\nsecond line\n');

  const dl = await call(http, 'download_file', { sandbox_id: sbx, path: '/work/dir/blob.bin' });
  assert.deepEqual(Buffer.from(dl.content[0].resource!.blob!, 'base64'), bin);

  const list = await ok<{ entries: { path: string; type: string; size: number }[] }>(stdio, 'list_files', { sandbox_id: sbx, path: '/work/dir' });
  assert.deepEqual(list.entries.map((e) => [e.path, e.type, e.size]).sort(), [['/work/dir/blob.bin', 'file', 6], ['/work/dir/notes.txt', 'file', 23]]);
});

test('a background process: started, its output paged by offset while it runs and after it exits, killed', async () => {
  const p = await ok<{ pid: number; running: boolean }>(stdio, 'start_process', { sandbox_id: sbx, command: 'echo one; echo two >&2; sleep 120; echo never', tag: 'waiter' });
  assert.equal(p.running, true);
  let first!: { output: string; next_offset: number; running: boolean };
  for (let i = 0; i < 50; i++) {
    first = await ok(http, 'read_process_output', { sandbox_id: sbx, pid: p.pid, wait_ms: 2000 });
    if (first.output === 'one\ntwo\n') break;
  }
  assert.equal(first.output, 'one\ntwo\n');
  assert.equal(first.running, true);
  const part = await ok<{ output: string; next_offset: number; more_available: boolean }>(stdio, 'read_process_output', { sandbox_id: sbx, pid: 'waiter', offset: 2, max_bytes: 3 });
  assert.deepEqual([part.output, part.next_offset, part.more_available], ['e\nt', 5, true]);
  await ok(http, 'kill_process', { sandbox_id: sbx, pid: p.pid, signal: 'SIGKILL' });
  let last!: { running: boolean; exit_code: number | null };
  for (let i = 0; i < 50 && (!last || last.running); i++) last = await ok(stdio, 'read_process_output', { sandbox_id: sbx, pid: p.pid, offset: first.next_offset, wait_ms: 2000 });
  assert.equal(last.running, false);
  assert.notEqual(last.exit_code, 0);
});

test('errors are isError results carrying the cordon code and the remedy', async () => {
  const r = await call(http, 'run_command', { sandbox_id: 'sbx-does-not-exist', command: 'true' });
  assert.equal(r.isError, true);
  assert.equal((r.structuredContent!.error as { code: string }).code, 'not_found');
  assert.match(r.content[0].text!, /^error not_found: sandbox sbx-does-not-exist does not exist; list sandboxes/);
  const s = await call(stdio, 'read_file', { sandbox_id: sbx, path: '/no/such/file' });
  assert.equal(s.isError, true);
  assert.equal((s.structuredContent!.error as { code: string }).code, 'not_found');
  const dir = await call(stdio, 'read_file', { sandbox_id: sbx, path: '/work' });
  assert.equal((dir.structuredContent!.error as { code: string }).code, 'invalid_argument');
  assert.match(dir.content[0].text!, /list_files/);
  const bad = await call(http, 'create_sandbox', { memory: 'lots' });
  assert.equal(bad.isError, true);
  assert.equal((bad.structuredContent!.error as { code: string }).code, 'invalid_argument');
  await assert.rejects(http.readResource({ uri: 'cordon://sandboxes/sbx-nope/files/etc/hostname' }), /not_found/);
});

test('hostile: 50 MiB of output is cut to head + tail with the marker, and the daemon does not hold it', async () => {
  const pid = d.proc.pid!;
  const baseline = memKb(pid, 'VmRSS');
  writeFileSync(`/proc/${pid}/clear_refs`, '5'); // resets VmHWM, the peak resident size
  const r = await ok<{ exit_code: number; stdout: string; stdout_bytes: number; truncated: boolean }>(http, 'run_command', {
    sandbox_id: sbx,
    command: 'head -c 52428800 /dev/zero | tr "\\0" x; echo; echo THE-END',
    timeout: 240,
  });
  const peakGrowthMiB = (memKb(pid, 'VmHWM') - baseline) / 1024;
  assert.equal(r.exit_code, 0);
  assert.equal(r.truncated, true);
  assert.equal(r.stdout_bytes, 52428800 + 9);
  assert.ok(r.stdout.includes(`${TRUNCATION_MARKER}: ${52428800 + 9 - MCP_LIMITS.outputDefault} of ${52428800 + 9} bytes of stdout omitted`), r.stdout.slice(MCP_LIMITS.outputDefault / 2, MCP_LIMITS.outputDefault / 2 + 300));
  assert.ok(r.stdout.startsWith('xxxx'));
  assert.ok(r.stdout.endsWith('xxx\nTHE-END\n'));
  assert.ok(r.stdout.length < MCP_LIMITS.outputDefault + 1024);
  console.log(`daemon peak RSS growth over 50 MiB of output: ${peakGrowthMiB.toFixed(1)} MiB`);
  // Streaming leaves garbage, not retention: V8 frees spent Buffers in rounds of up to 64 MiB of
  // external memory, and its young generation holds up to 32 MiB more (measured: 20-69 MiB). Holding
  // the output would take its chunks, their concatenation and the text: 150 MiB and more.
  assert.ok(peakGrowthMiB < 96, `the daemon's peak memory grew by ${peakGrowthMiB.toFixed(1)} MiB while 50 MiB of output passed`);
});

test('hostile: an oversized file is read only up to the bound; download and resource refuse it', async () => {
  await ok(stdio, 'run_command', { sandbox_id: sbx, command: 'head -c 67108864 /dev/zero | tr "\\0" y > /tmp/huge' });
  const r = await ok<{ bytes: number; size: number; truncated: boolean; next_offset: number; content: string }>(http, 'read_file', { sandbox_id: sbx, path: '/tmp/huge' });
  assert.deepEqual([r.bytes, r.size, r.truncated, r.next_offset], [MCP_LIMITS.readDefault, 64 * 1024 * 1024, true, MCP_LIMITS.readDefault]);
  assert.equal(r.content, 'y'.repeat(MCP_LIMITS.readDefault));
  const dl = await call(stdio, 'download_file', { sandbox_id: sbx, path: '/tmp/huge' });
  assert.equal((dl.structuredContent!.error as { code: string }).code, 'payload_too_large');
  await assert.rejects(http.readResource({ uri: `cordon://sandboxes/${sbx}/files/tmp/huge` }), /payload_too_large/);
  const over = await call(http, 'read_file', { sandbox_id: sbx, path: '/tmp/huge', max_bytes: MCP_LIMITS.readMax + 1 });
  assert.equal(over.isError, true);
  await ok(stdio, 'run_command', { sandbox_id: sbx, command: 'rm /tmp/huge' });
});

test('snapshot, create from it, kill: the copy has the files, kill removes both', async () => {
  const snap = await ok<{ id: string }>(http, 'create_snapshot', { sandbox_id: sbx, name: 'mcp-snap' });
  const copy = await ok<{ id: string; snapshot: string }>(stdio, 'create_sandbox_from_snapshot', { snapshot: 'mcp-snap', timeout: '10m' });
  extra.push(copy.id);
  assert.equal(copy.snapshot, snap.id);
  const read = await ok<{ content: string }>(http, 'read_file', { sandbox_id: copy.id, path: '/work/dir/notes.txt' });
  assert.equal(read.content, 'first line\nsecond line\n');
  for (const id of [copy.id, sbx]) await ok(stdio, 'kill_sandbox', { sandbox_id: id });
  const listed = await ok<{ sandboxes: { id: string }[] }>(http, 'list_sandboxes', {});
  assert.ok(!listed.sandboxes.some((s) => s.id === sbx || s.id === copy.id));
  const gone = await call(http, 'run_command', { sandbox_id: sbx, command: 'true' });
  assert.equal((gone.structuredContent!.error as { code: string }).code, 'not_found');
  await d.client.removeSnapshot(snap.id);
});
