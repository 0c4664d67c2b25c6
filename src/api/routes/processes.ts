import type { FastifyReply } from 'fastify';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import { CordonError } from '../../errors/registry.js';
import type { LiveSandbox } from '../../engine/live-sandbox.js';
import type { ManagedProcess, ProcessEvent } from '../../engine/process-manager.js';
import type { StreamDrop } from '../../engine/output-fanout.js';
import { responseFlow, SocketFlow } from '../stream-flow.js';
import { execBody, idParams, procParams, processBody, resizeBody, signalBody, stdinBody } from '../schemas.js';
import type { ApiDeps, TypedApp } from '../server.js';
import { execView, processView } from '../views.js';

/** Wire form of a process event: output bytes travel as base64 so binary output survives JSON. */
export function eventWire(ev: ProcessEvent) {
  if (ev.type === 'exit') return { type: 'exit', exit_code: ev.exitCode, signal: ev.signal ?? null, timed_out: !!ev.timedOut, oom_killed: !!ev.oomKilled };
  if (ev.type === 'start') return { type: 'start', pid: ev.pid };
  return { type: ev.type, data: ev.data.toString('base64') };
}

/** The last SSE event of a stream the engine cut: the sandbox went away, so there is no exit event. */
export function dropEvent(why: StreamDrop): string {
  const err = new CordonError(why.kind === 'sandbox_gone' ? 'sandbox_gone' : 'unavailable', why.message);
  return `event: error\ndata: ${JSON.stringify({ type: 'error', ...err.toJSON() })}\n\n`;
}

/**
 * Server-Sent Events: one `data:` JSON line per event, ending after the exit event. A client that
 * reads slowly pauses the process; one that stops reading is cut off at the write deadline.
 */
function streamSse(reply: FastifyReply, proc: ManagedProcess, replay: boolean): void {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
  const unsubscribe = proc.subscribe(
    {
      ...responseFlow(res),
      push(ev) {
        if (res.writableEnded) return;
        res.write(`event: ${ev.type}\ndata: ${JSON.stringify(eventWire(ev))}\n\n`);
        if (ev.type === 'exit') res.end();
      },
      drop(why) {
        if (why.kind === 'stalled') return void res.destroy();
        if (!res.writableEnded) res.end(dropEvent(why));
      },
    },
    replay,
  );
  res.on('close', unsubscribe);
}

const clientMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('stdin'), data: z.string() }),
  z.object({ type: z.literal('close_stdin') }),
  z.object({ type: z.literal('resize'), cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) }),
  z.object({ type: z.literal('signal'), signal: signalBody.shape.signal }),
]);

/**
 * A WebSocket bound to one process: events out, stdin / resize / signal in. `early` holds messages
 * that arrived while the process was still starting, so no stdin is lost.
 */
function bindSocket(socket: WebSocket, live: LiveSandbox, proc: ManagedProcess, replay: boolean, inputLimit: number, early: string[] = []): void {
  const flow = new SocketFlow(socket);
  const unsubscribe = proc.subscribe(
    {
      backlog: () => flow.backlog(),
      onDrain: (cb) => flow.onDrain(cb),
      push(ev) {
        flow.send(JSON.stringify(eventWire(ev)));
        if (ev.type === 'exit') socket.close(1000, 'process exited');
      },
      drop(why) {
        if (why.kind === 'stalled') return void socket.terminate();
        const err = new CordonError(why.kind === 'sandbox_gone' ? 'sandbox_gone' : 'unavailable', why.message);
        flow.send(JSON.stringify({ type: 'error', ...err.toJSON() }));
        socket.close(4000 + err.status, err.message.slice(0, 120));
      },
    },
    replay,
  );
  socket.on('close', unsubscribe);
  let chain = Promise.resolve();
  // Input backpressure: while more than `inputLimit` bytes wait for the process, stop reading the socket.
  let pending = 0;
  let paused = false;
  const handle = (text: string) => {
    const parsed = clientMessage.safeParse(safeJson(text));
    if (!parsed.success) {
      flow.send(JSON.stringify({ type: 'error', code: 'invalid_argument', message: `bad message: ${parsed.error.issues[0]?.message}` }));
      if (flow.backlog() > inputLimit) socket.terminate();
      return;
    }
    pending += text.length;
    if (pending > inputLimit && !paused) {
      paused = true;
      socket.pause();
    }
    const m = parsed.data;
    const ref = proc.info.id;
    // Keep client order: stdin bytes must not overtake each other or the close that follows them.
    chain = chain
      .then(async () => {
        if (m.type === 'stdin') await live.processes.sendStdin(ref, Buffer.from(m.data, 'base64'));
        else if (m.type === 'close_stdin') live.processes.closeStdin(ref);
        else if (m.type === 'resize') await live.processes.resize(ref, m.cols, m.rows);
        else await live.processes.signal(ref, m.signal as NodeJS.Signals);
      })
      .catch((e: Error) => flow.send(JSON.stringify({ type: 'error', code: (e as CordonError).code ?? 'internal', message: e.message })))
      .finally(() => {
        pending -= text.length;
        if (paused && pending <= inputLimit / 2) {
          paused = false;
          socket.resume();
        }
      });
  };
  socket.on('message', (raw) => handle(raw.toString()));
  for (const m of early) handle(m);
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

export function registerProcessRoutes(app: TypedApp, { mgr, cfg }: ApiDeps): void {
  app.post('/v1/sandboxes/:id/exec', { schema: { summary: 'Run a command; stream=true answers with Server-Sent Events', params: idParams, body: execBody } }, async (req, reply) => {
    const b = req.body;
    const live = mgr.running(req.params.id);
    const stdinData = b.stdin === undefined ? undefined : Buffer.from(b.stdin, b.stdin_encoding === 'base64' ? 'base64' : 'utf8');
    const cmd = { cmd: b.cmd, env: b.env, cwd: b.cwd, user: b.user, timeoutMs: b.timeout, stdinData };
    if (b.stream) {
      const proc = await live.start(cmd);
      return streamSse(reply, proc, true);
    }
    return execView(await live.exec(cmd));
  });

  app.post('/v1/sandboxes/:id/processes', { schema: { summary: 'Start a background process', params: idParams, body: processBody } }, async (req, reply) => {
    const b = req.body;
    const proc = await mgr.running(req.params.id).start({ cmd: b.cmd, env: b.env, cwd: b.cwd, user: b.user, tag: b.tag, stdin: b.stdin, timeoutMs: b.timeout, tty: b.pty });
    reply.status(201).send(processView(proc.info));
  });

  app.get('/v1/sandboxes/:id/processes', { schema: { summary: 'List processes started through the API', params: idParams } }, async (req) =>
    mgr.running(req.params.id).processes.list().map(processView),
  );
  app.get('/v1/sandboxes/:id/processes/:ref', { schema: { summary: 'One process, by id (p-N), pid or tag', params: procParams } }, async (req) =>
    processView(mgr.running(req.params.id).processes.get(req.params.ref).info),
  );
  app.get(
    '/v1/sandboxes/:id/processes/:ref/events',
    { schema: { summary: 'Reconnect to a process output as Server-Sent Events', params: procParams, querystring: z.object({ replay: z.enum(['true', 'false']).optional() }).strict() } },
    async (req, reply) => {
      const proc = mgr.running(req.params.id).processes.get(req.params.ref);
      streamSse(reply, proc, req.query.replay !== 'false');
    },
  );
  app.post('/v1/sandboxes/:id/processes/:ref/stdin', { schema: { summary: 'Write to stdin', params: procParams, body: stdinBody } }, async (req, reply) => {
    await mgr.running(req.params.id).processes.sendStdin(req.params.ref, Buffer.from(req.body.data, req.body.encoding === 'base64' ? 'base64' : 'utf8'));
    reply.status(204).send();
  });
  app.post('/v1/sandboxes/:id/processes/:ref/close-stdin', { schema: { summary: 'Close stdin (EOF)', params: procParams } }, async (req, reply) => {
    mgr.running(req.params.id).processes.closeStdin(req.params.ref);
    reply.status(204).send();
  });
  app.post('/v1/sandboxes/:id/processes/:ref/signal', { schema: { summary: 'Send a signal', params: procParams, body: signalBody } }, async (req, reply) => {
    await mgr.running(req.params.id).processes.signal(req.params.ref, req.body.signal as NodeJS.Signals);
    reply.status(204).send();
  });
  app.post('/v1/sandboxes/:id/processes/:ref/resize', { schema: { summary: 'Resize the PTY', params: procParams, body: resizeBody } }, async (req, reply) => {
    await mgr.running(req.params.id).processes.resize(req.params.ref, req.body.cols, req.body.rows);
    reply.status(204).send();
  });
  app.delete('/v1/sandboxes/:id/processes/:ref', { schema: { summary: 'Kill a process (SIGKILL)', params: procParams } }, async (req, reply) => {
    await mgr.running(req.params.id).processes.signal(req.params.ref, 'SIGKILL');
    reply.status(204).send();
  });

  // WebSocket surfaces: attach to an existing process, or start one (first message is the command).
  app.get('/v1/sandboxes/:id/processes/:ref/attach', { websocket: true, schema: { params: procParams, hide: true } }, (socket, req) => {
    try {
      const live = mgr.running(req.params.id);
      bindSocket(socket, live, live.processes.get(req.params.ref), true, cfg.streamHighWaterBytes);
    } catch (e) {
      socket.close(4000 + ((e as CordonError).status ?? 500), (e as Error).message.slice(0, 120));
    }
  });
  app.get('/v1/sandboxes/:id/exec/ws', { websocket: true, schema: { params: idParams, hide: true } }, (socket, req) => {
    const queued: string[] = [];
    let first = true;
    let queuedBytes = 0;
    const onMessage = (raw: Buffer) => {
      if (!first) {
        queued.push(raw.toString());
        // Input sent while the process starts is kept, up to the stream bound; past it stop reading.
        if ((queuedBytes += raw.length) > cfg.streamHighWaterBytes) socket.pause();
        return;
      }
      first = false;
      void (async () => {
        try {
          const parsed = processBody.safeParse(safeJson(raw.toString()));
          if (!parsed.success) throw new CordonError('invalid_argument', parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
          const b = parsed.data;
          const live = mgr.running(req.params.id);
          const proc = await live.start({ cmd: b.cmd, env: b.env, cwd: b.cwd, user: b.user, tag: b.tag, stdin: b.stdin ?? true, timeoutMs: b.timeout, tty: b.pty });
          socket.off('message', onMessage);
          socket.resume(); // bindSocket pauses it again if the queued input is still too much
          bindSocket(socket, live, proc, true, cfg.streamHighWaterBytes, queued);
        } catch (e) {
          const err = e instanceof CordonError ? e : new CordonError('internal', (e as Error).message);
          socket.send(JSON.stringify({ type: 'error', ...err.toJSON() }));
          socket.close(4000 + err.status, err.message.slice(0, 120));
        }
      })();
    };
    socket.on('message', onMessage);
  });
}
