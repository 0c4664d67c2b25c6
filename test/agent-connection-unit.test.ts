// The daemon's end of the agent connection against a scripted stand-in agent on a real Unix socket:
// what an agent may still send for a channel the daemon has just closed (acks and a write's error for
// an upload refused mid-way) keeps the connection, while data the daemon never granted ends it.
// Unit test of one module: no sandbox, no daemon.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { z } from 'zod';
import { AgentConnection } from '../src/engine/agent/agent-connection.js';
import { FRAME, FrameDecoder, ackPayload, encodeFrame } from '../src/engine/agent/frame-codec.js';

const json = (m: unknown) => encodeFrame(FRAME.json, 0, Buffer.from(JSON.stringify(m)));
const HELLO = { op: 'hello', version: 1, boot: 'ab12', pid: 7, processes: [], writeWindow: 512 * 1024 };

describe('agent connection: frames for channels the daemon closed', () => {
  let dir: string;
  let server: Server;
  let channel = 100;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cordon-agent-conn-'));
    server = createServer();
    await new Promise<void>((r) => server.listen(join(dir, 'agent.sock'), r));
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A connection past its hello, the stand-in agent's socket (answering pings), and how the connection ended. */
  async function connected() {
    const accepted = new Promise<Socket>((r) => server.once('connection', r));
    const agent = createConnection(join(dir, 'agent.sock'));
    const daemonSide = await accepted;
    let closed: string | undefined;
    let greeted!: () => void;
    const hello = new Promise<void>((r) => (greeted = r));
    const conn = new AgentConnection(daemonSide, { hello: () => greeted(), exit: () => {}, closed: (reason) => (closed = reason) }, () => ++channel);
    const decoder = new FrameDecoder();
    agent.on('data', (d) =>
      decoder.push(d, (f) => {
        if (f.type !== FRAME.json) return;
        const m = JSON.parse(f.payload.toString()) as { id: number; op: string };
        if (m.op === 'ping') agent.write(json({ id: m.id }));
      }),
    );
    agent.write(json(HELLO));
    await hello;
    return { conn, agent, closed: () => closed };
  }

  const ping = (conn: AgentConnection) => conn.request({ op: 'ping' }, z.object({}), { timeoutMs: 5000 });

  test('acks and a write error arriving after an upload channel was closed keep the connection', async () => {
    const { conn, agent, closed } = await connected();
    const out = conn.openOut(64 * 1024);
    await out.write(Buffer.alloc(16 * 1024, 1));
    out.close(); // the upload was refused (413) while the agent still had its acks in flight
    agent.write(encodeFrame(FRAME.ack, out.id, ackPayload(8 * 1024)));
    agent.write(encodeFrame(FRAME.ack, out.id, ackPayload(16 * 1024)));
    agent.write(json({ op: 'chErr', ch: out.id, error: { errno: 'EPIPE', message: 'write cancelled' } }));
    await ping(conn);
    assert.equal(closed(), undefined, 'the connection stays open');
    assert.equal(conn.isOpen, true);
    agent.destroy();
  });

  test('data on a closed upload channel is still a violation: the agent was never granted any', async () => {
    const { conn, agent, closed } = await connected();
    const out = conn.openOut(64 * 1024);
    out.close();
    agent.write(encodeFrame(FRAME.data, out.id, Buffer.alloc(10)));
    for (let i = 0; i < 100 && conn.isOpen; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(conn.isOpen, false);
    assert.match(closed() ?? '', /data on channel \d+, which is not open/);
    agent.destroy();
  });

  test('an ack on a channel that never existed ends the connection', async () => {
    const { conn, agent, closed } = await connected();
    agent.write(encodeFrame(FRAME.ack, 99_999, ackPayload(1)));
    for (let i = 0; i < 100 && conn.isOpen; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(conn.isOpen, false);
    assert.match(closed() ?? '', /ack on channel 99999, which is not open/);
    agent.destroy();
  });
});
