// Tools that run things: a command to completion (output bounded, head and tail kept), a background
// process, and paging through a process's output by byte offset.
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { z } from 'zod';
import { CordonError } from '../errors/registry.js';
import type { Cordon } from '../sdk/client.js';
import type { ProcessInfo } from '../sdk/types.js';
import { BoundedOutput } from './bounded-output.js';
import { commandLine, duration, envMap, sandboxId, shellArgv } from './inputs.js';
import { MCP_LIMITS } from './limits.js';
import { guarded, jsonResult } from './results.js';

/** A command without a timeout of its own still ends: an MCP call cannot wait forever. */
const RUN_TIMEOUT_DEFAULT = '120s';
/** Once output past the offset has arrived, this much quiet means the buffered part has all been read. */
const QUIET_MS = 150;

const processSummary = (p: ProcessInfo) => ({ id: p.id, pid: p.pid, tag: p.tag, cmd: p.cmd, running: p.running, exit_code: p.exit_code, started_at: p.started_at, exited_at: p.exited_at });

const processRef = z
  .union([z.number().int().positive(), z.string().min(1).max(128)])
  .describe('the process: its pid, its id (p-N) or the tag given to start_process');

const runInput = z
  .object({
    sandbox_id: sandboxId,
    command: commandLine,
    cwd: z.string().max(4096).optional().describe('working directory'),
    env: envMap.optional(),
    user: z.string().max(64).optional().describe('user to run as (default: the sandbox default user)'),
    timeout: duration.optional().describe(`kill the command after this long (default ${RUN_TIMEOUT_DEFAULT})`),
    max_output_bytes: z.number().int().min(256).max(MCP_LIMITS.outputMax).optional().describe(`bytes kept of stdout and of stderr each (default ${MCP_LIMITS.outputDefault}); beyond it the head and tail are kept and a marker says what was left out`),
  })
  .strict();
const startInput = z
  .object({
    sandbox_id: sandboxId,
    command: commandLine,
    cwd: z.string().max(4096).optional(),
    env: envMap.optional(),
    user: z.string().max(64).optional(),
    tag: z.string().min(1).max(64).optional().describe('a name to refer to the process by instead of its pid'),
    timeout: duration.optional().describe('kill it after this long (default: runs until it exits or the sandbox goes)'),
  })
  .strict();
const readInput = z
  .object({
    sandbox_id: sandboxId,
    pid: processRef,
    offset: z.number().int().min(0).optional().describe('byte offset in the output to read from (default 0); pass the next_offset of the previous read to continue'),
    max_bytes: z.number().int().min(1).max(MCP_LIMITS.outputMax).optional().describe(`most bytes to return (default ${MCP_LIMITS.outputDefault})`),
    wait_ms: z.number().int().min(0).max(MCP_LIMITS.waitMaxMs).optional().describe(`how long to wait for output past the offset while the process runs (default ${MCP_LIMITS.waitDefaultMs})`),
  })
  .strict();
const killInput = z
  .object({ sandbox_id: sandboxId, pid: processRef, signal: z.enum(['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2']).optional().describe('default SIGKILL') })
  .strict();

export function registerCommandTools(server: McpServer, cordon: Cordon): void {
  server.registerTool(
    'run_command',
    {
      title: 'Run a command',
      description: 'Run a shell command in a sandbox and wait for it to finish; returns exit code, stdout and stderr. Long output is truncated in the middle with a marker. For servers or long jobs use start_process.',
      inputSchema: runInput,
    },
    guarded(async (a: z.infer<typeof runInput>, extra?: { signal?: AbortSignal }) => {
      const limit = a.max_output_bytes ?? MCP_LIMITS.outputDefault;
      const stdout = new BoundedOutput(limit);
      const stderr = new BoundedOutput(limit);
      const started = Date.now();
      let exit: { exit_code: number; signal: string | null; timed_out: boolean; oom_killed: boolean } | undefined;
      const events = cordon.sandbox(a.sandbox_id).execStream(shellArgv(a.command), { cwd: a.cwd, env: a.env, user: a.user, timeout: a.timeout ?? RUN_TIMEOUT_DEFAULT, signal: extra?.signal });
      // Read to the end whatever the size: the process is never blocked on a full pipe, and only the bounds are kept.
      for await (const ev of events) {
        if (ev.type === 'stdout' || ev.type === 'pty') stdout.push(ev.data);
        else if (ev.type === 'stderr') stderr.push(ev.data);
        else if (ev.type === 'exit') exit = ev;
      }
      if (!exit) throw new CordonError('unavailable', 'the command output stream ended without an exit status; check the sandbox with list_sandboxes');
      const result = {
        exit_code: exit.exit_code,
        signal: exit.signal,
        timed_out: exit.timed_out,
        oom_killed: exit.oom_killed,
        duration_ms: Date.now() - started,
        stdout: stdout.text('stdout'),
        stderr: stderr.text('stderr'),
        stdout_bytes: stdout.total,
        stderr_bytes: stderr.total,
        truncated: stdout.truncated || stderr.truncated,
      };
      const how = exit.timed_out ? ' (killed: timeout)' : exit.oom_killed ? ' (killed: out of memory)' : '';
      const text = `exit code ${exit.exit_code}${how}\n--- stdout (${stdout.total} bytes) ---\n${result.stdout}\n--- stderr (${stderr.total} bytes) ---\n${result.stderr}`;
      return { content: [{ type: 'text', text }], structuredContent: result };
    }),
  );

  server.registerTool(
    'start_process',
    {
      title: 'Start a background process',
      description: 'Start a shell command in the background (a server, a long build) and return its pid at once; read its output with read_process_output and stop it with kill_process.',
      inputSchema: startInput,
    },
    guarded(async (a: z.infer<typeof startInput>) => {
      const p = await cordon.sandbox(a.sandbox_id).startProcess(shellArgv(a.command), { cwd: a.cwd, env: a.env, user: a.user, tag: a.tag, timeout: a.timeout });
      return jsonResult(processSummary(p), `process ${p.pid} started`);
    }),
  );

  server.registerTool(
    'read_process_output',
    {
      title: 'Read a process output',
      description:
        'Read the combined stdout and stderr of a process started with start_process, from a byte offset, at most max_bytes. Returns next_offset to continue from, and whether the process still runs. The daemon keeps the most recent output of each process (a bounded buffer); offsets count from the oldest byte it still holds.',
      inputSchema: readInput,
      annotations: { readOnlyHint: true },
    },
    guarded(async (a: z.infer<typeof readInput>, extra?: { signal?: AbortSignal }) => {
      const sbx = cordon.sandbox(a.sandbox_id);
      const info = await sbx.process(a.pid);
      const offset = a.offset ?? 0;
      const max = a.max_bytes ?? MCP_LIMITS.outputDefault;
      const stop = new AbortController();
      const onOuterAbort = () => stop.abort();
      extra?.signal?.addEventListener('abort', onOuterAbort);
      let timer = setTimeout(() => stop.abort(), a.wait_ms ?? MCP_LIMITS.waitDefaultMs);
      const kept: Buffer[] = [];
      let keptBytes = 0;
      let pos = 0;
      let more = false;
      let exit: { exit_code: number } | undefined;
      try {
        for await (const ev of sbx.events(a.pid, { signal: stop.signal })) {
          if (ev.type === 'exit') {
            exit = ev;
            break;
          }
          if (ev.type !== 'stdout' && ev.type !== 'stderr' && ev.type !== 'pty') continue;
          const from = Math.max(0, offset - pos);
          pos += ev.data.length;
          if (from >= ev.data.length) continue;
          const take = ev.data.subarray(from, from + (max - keptBytes));
          kept.push(Buffer.from(take));
          keptBytes += take.length;
          if (take.length < ev.data.length - from || keptBytes >= max) {
            more = take.length < ev.data.length - from;
            break;
          }
          // The replayed part arrives at once; a short quiet after it means there is nothing more yet.
          clearTimeout(timer);
          timer = setTimeout(() => stop.abort(), QUIET_MS);
        }
      } catch (e) {
        if (!stop.signal.aborted) throw e;
      } finally {
        clearTimeout(timer);
        extra?.signal?.removeEventListener('abort', onOuterAbort);
        stop.abort(); // stops following the stream when the loop ended early
      }
      const output = Buffer.concat(kept).toString('utf8');
      const now = exit ? undefined : await sbx.process(a.pid);
      const result = {
        pid: info.pid,
        id: info.id,
        output,
        offset,
        bytes: keptBytes,
        next_offset: offset + keptBytes,
        more_available: more,
        running: now ? now.running : false,
        exit_code: exit ? exit.exit_code : (now?.exit_code ?? null),
      };
      const state = result.running ? 'running' : `exited with code ${result.exit_code}`;
      return {
        content: [{ type: 'text', text: `process ${info.pid} (${state}); bytes ${offset}..${result.next_offset}${more ? ', more available' : ''}\n${output}` }],
        structuredContent: result,
      };
    }),
  );

  server.registerTool(
    'kill_process',
    { title: 'Signal a process', description: 'Send a signal (SIGKILL by default) to a process started with start_process.', inputSchema: killInput, annotations: { destructiveHint: true } },
    guarded(async (a: z.infer<typeof killInput>) => {
      const signal = a.signal ?? 'SIGKILL';
      await cordon.sandbox(a.sandbox_id).signal(a.pid, signal);
      return jsonResult({ pid: a.pid, signal }, `sent ${signal} to ${a.pid}`);
    }),
  );
}
