// envd's process.Process service (spec/envd/process/process.proto) over the engine's ProcessManager.
import { z } from 'zod';
import type { LiveSandbox } from '../../engine/live-sandbox.js';
import type { ManagedProcess, ProcessEvent } from '../../engine/process-manager.js';
import { RpcError, StreamDropped, type Json, type MethodDef, type RpcContext, type StreamSender } from './connect.js';
import { envdPath, envdWorkdir, parseMsg, resolveEnvdUser, userFromAuthorization } from './envd-context.js';

const u32 = z.number().int().min(0).max(2 ** 32 - 1);
const bytes = z.string().max(24 * 1024 * 1024).regex(/^[A-Za-z0-9+/_-]*=*$/, 'must be base64');
const selector = z.union([z.object({ pid: z.coerce.number().pipe(u32) }), z.object({ tag: z.string().min(1).max(256) })], {
  error: 'give process.pid or process.tag',
});
const size = z.object({ cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) });
const envs = z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'environment variable names are letters, digits and _'), z.string().max(131072));

const startReq = z.object({
  process: z.object({
    cmd: z.string().min(1).max(4096),
    args: z.array(z.string().max(131072)).max(4096).optional(),
    envs: envs.optional(),
    cwd: z.string().max(4096).optional(),
  }),
  pty: z.object({ size }).optional(),
  tag: z.string().min(1).max(256).optional(),
  stdin: z.boolean().optional(),
});
const connectReq = z.object({ process: selector });
const inputMsg = z.union([z.object({ stdin: bytes }), z.object({ pty: bytes })], { error: 'give input.stdin or input.pty (base64)' });
const sendInputReq = z.object({ process: selector, input: inputMsg });
const SIGNALS: Record<string, NodeJS.Signals> = { SIGNAL_SIGTERM: 'SIGTERM', SIGNAL_SIGKILL: 'SIGKILL', '15': 'SIGTERM', '9': 'SIGKILL' };
const sendSignalReq = z.object({
  process: selector,
  signal: z.union([z.string(), z.number()]).transform((v, ctx) => {
    const s = SIGNALS[String(v)];
    if (!s) {
      ctx.addIssue({ code: 'custom', message: 'must be SIGNAL_SIGTERM or SIGNAL_SIGKILL' });
      return z.NEVER;
    }
    return s;
  }),
});
const updateReq = z.object({ process: selector, pty: z.object({ size }).optional() });

const ref = (sel: z.infer<typeof selector>) => ('pid' in sel ? sel.pid : `tag:${sel.tag}`);
const b64 = (b: Buffer) => b.toString('base64');

/** One engine event as a process.ProcessEvent (proto3 JSON: bytes in base64, oneofs by field name). */
function wireEvent(ev: ProcessEvent): Json {
  switch (ev.type) {
    case 'start':
      return { start: { pid: ev.pid } };
    case 'stdout':
    case 'stderr':
    case 'pty':
      return { data: { [ev.type]: b64(ev.data) } };
    case 'exit': {
      const status = ev.signal ? `signal: ${ev.signal === 'SIGKILL' ? 'killed' : ev.signal.toLowerCase().replace(/^sig/, '')}` : `exit status ${ev.exitCode}`;
      return { end: { exitCode: ev.exitCode, exited: !ev.signal, status, ...(ev.error ? { error: ev.error } : ev.signal ? { error: status } : {}) } };
    }
  }
}

/**
 * Stream a process's events until it exits; at the deadline the process is killed, as envd does. A
 * client that reads slowly pauses the process; when the sandbox goes away the stream is dropped
 * without an end event, so the SDK reports the sandbox as gone rather than a command exit.
 */
function follow(proc: ManagedProcess, ctx: RpcContext, send: StreamSender, replay: boolean, killOnDeadline: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    let unsubscribe: (() => void) | undefined;
    let settled = false;
    const settle = (err?: Error) => {
      if (settled) return;
      settled = true;
      unsubscribe?.();
      ctx.signal.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve();
    };
    const onAbort = () => {
      const reason = ctx.signal.reason;
      if (killOnDeadline && reason instanceof RpcError && reason.code === 'deadline_exceeded' && proc.info.running) proc.handle.signal('SIGKILL').catch(() => {});
      settle(reason);
    };
    if (ctx.signal.aborted) return onAbort();
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    unsubscribe = proc.subscribe(
      {
        backlog: send.backlog,
        onDrain: send.onDrain,
        push(ev) {
          send({ event: wireEvent(ev) });
          if (ev.type === 'exit') settle();
        },
        drop: (why) => settle(new StreamDropped(why.message)),
      },
      replay,
    );
    if (settled) unsubscribe();
  });
}

export function processService(live: () => LiveSandbox): Record<string, MethodDef> {
  const keepalive = { event: { keepalive: {} } };
  return {
    Start: {
      kind: 'server_stream',
      keepalive,
      async handle(msg, ctx, send) {
        const req = parseMsg(startReq, msg, 'StartRequest');
        const sb = live();
        const user = await resolveEnvdUser(sb, userFromAuthorization(ctx.headers));
        const proc = await sb.start({
          cmd: [req.process.cmd, ...(req.process.args ?? [])],
          env: req.process.envs,
          // As envd: no cwd means the template's workdir; a relative one is taken from the home.
          cwd: req.process.cwd ? envdPath(req.process.cwd, user.home, 'process.cwd') : envdWorkdir(sb, user),
          user: user.name,
          tag: req.tag,
          // envd keeps stdin open unless told otherwise; a terminal always takes input.
          stdin: req.pty ? true : (req.stdin ?? true),
          tty: req.pty?.size,
        });
        await follow(proc, ctx, send, true, true);
      },
    },
    Connect: {
      kind: 'server_stream',
      keepalive,
      async handle(msg, ctx, send) {
        const req = parseMsg(connectReq, msg, 'ConnectRequest');
        const proc = live().processes.get(ref(req.process));
        if (!proc.info.running) throw new RpcError('not_found', `process ${proc.info.pid} has already exited`);
        await follow(proc, ctx, send, false, false);
      },
    },
    List: {
      kind: 'unary',
      async handle() {
        const processes = live()
          .processes.list()
          .filter((p) => p.running)
          .map((p) => ({
            config: { cmd: p.cmd[0], args: p.cmd.slice(1), envs: p.env, cwd: p.cwd },
            pid: p.pid,
            ...(p.tag ? { tag: p.tag } : {}),
          }));
        return { processes };
      },
    },
    SendInput: {
      kind: 'unary',
      async handle(msg) {
        const req = parseMsg(sendInputReq, msg, 'SendInputRequest');
        const data = Buffer.from('stdin' in req.input ? req.input.stdin : req.input.pty, 'base64');
        await live().processes.sendStdin(ref(req.process), data);
        return {};
      },
    },
    StreamInput: {
      kind: 'client_stream',
      async handle(msgs) {
        let target: string | number | undefined;
        for await (const m of msgs) {
          if (m.start) target = ref(parseMsg(connectReq, m.start, 'StreamInputRequest.start').process);
          else if (m.data) {
            if (target === undefined) throw new RpcError('failed_precondition', 'send a start message naming the process before data');
            const d = parseMsg(z.object({ input: inputMsg }), m.data, 'StreamInputRequest.data');
            await live().processes.sendStdin(target, Buffer.from('stdin' in d.input ? d.input.stdin : d.input.pty, 'base64'));
          }
        }
        return {};
      },
    },
    SendSignal: {
      kind: 'unary',
      async handle(msg) {
        const req = parseMsg(sendSignalReq, msg, 'SendSignalRequest');
        const proc = live().processes.get(ref(req.process));
        if (!proc.info.running) throw new RpcError('not_found', `process ${proc.info.pid} has already exited`);
        await live().processes.signal(proc.info.id, req.signal);
        return {};
      },
    },
    CloseStdin: {
      kind: 'unary',
      async handle(msg) {
        const req = parseMsg(connectReq, msg, 'CloseStdinRequest');
        live().processes.closeStdin(ref(req.process));
        return {};
      },
    },
    Update: {
      kind: 'unary',
      async handle(msg) {
        const req = parseMsg(updateReq, msg, 'UpdateRequest');
        if (req.pty) await live().processes.resize(ref(req.process), req.pty.size.cols, req.pty.size.rows);
        return {};
      },
    },
  };
}
