// A hostile agent: the daemon runs a test program as every sandbox's agent (--agent-binary), which
// sends garbage, oversized frames, floods, data past its credit, lies about paths, never answers,
// or connects in a loop. The daemon stays healthy and bounded, records what happened, serves each
// such sandbox through the runtime's exec path, and a sandbox next to them keeps working.
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { until } from './helpers/assert.js';

const HOSTILE = `#!/usr/bin/node
// Picks its misbehaviour from the sandbox's hostname (hostile-MODE). The init runs it as it runs the
// real agent, under cordon-supervise: a hostile agent that exits is started again.
const net = require('net');
const fs = require('fs');
const crypto = require('crypto');
const mode = fs.readFileSync('/etc/hostname', 'utf8').trim().replace(/^hostile-/, '');
const SOCK = '/.cordon/run/agent.sock';
const frame = (type, ch, payload) => {
  const b = Buffer.alloc(9 + payload.length);
  b.writeUInt32BE(payload.length, 0);
  b[4] = type;
  b.writeUInt32BE(ch, 5);
  payload.copy(b, 9);
  return b;
};
const json = (o) => frame(1, 0, Buffer.from(JSON.stringify(o)));
const hello = () => json({ op: 'hello', version: 1, boot: 'abc123', pid: process.pid, processes: [] });
const flood = (c, chunk) => {
  const pump = () => {
    while (c.write(chunk));
    c.once('drain', pump);
  };
  pump();
};
function connect(onConn) {
  const c = net.connect(SOCK);
  c.on('error', () => {});
  c.on('close', () => setTimeout(() => process.exit(0), 50));
  c.on('connect', () => onConn(c));
}
/** Calls onRequest for each JSON request the daemon sends. */
function requests(c, onRequest) {
  let buf = Buffer.alloc(0);
  c.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 9 && buf.length >= 9 + buf.readUInt32BE(0)) {
      const len = buf.readUInt32BE(0);
      const type = buf[4];
      const body = buf.subarray(9, 9 + len);
      buf = buf.subarray(9 + len);
      if (type === 1) onRequest(JSON.parse(body.toString()));
    }
  });
}
switch (mode) {
  case 'none':
    setInterval(() => {}, 1 << 30);
    break;
  case 'garbage':
    connect((c) => c.write(crypto.randomBytes(4096)));
    break;
  case 'oversized':
    connect((c) => {
      c.write(hello());
      const h = Buffer.alloc(9);
      h.writeUInt32BE(0x7fffffff, 0);
      h[4] = 1;
      c.write(h);
      flood(c, Buffer.alloc(1 << 20));
    });
    break;
  case 'flood':
    connect((c) => {
      c.write(hello());
      flood(c, frame(2, 999999, Buffer.alloc(65536)));
    });
    break;
  case 'badhello':
    connect((c) => {
      const p = { proc: 'p-1', pid: 1, meta: {}, out: [{ base: 0, written: 0, eof: false }], stdinOpen: false, tty: true };
      c.write(json({ op: 'hello', version: 1, boot: 'abc', pid: 1, processes: Array.from({ length: 5000 }, () => p) }));
    });
    break;
  case 'mute':
    connect((c) => {
      c.write(hello());
      c.on('data', () => {});
    });
    break;
  case 'connflood': {
    let n = 0;
    const again = () => {
      const c = net.connect(SOCK);
      c.on('error', () => {});
      c.on('connect', () => c.destroy());
      c.on('close', () => (++n < 400 ? again() : setInterval(() => {}, 1 << 30)));
    };
    again();
    break;
  }
  case 'liar':
    connect((c) => {
      c.write(hello());
      requests(c, (r) => {
        if (r.op === 'ping') return c.write(json({ id: r.id }));
        if (r.op === 'stat') {
          const entry = { path: '/etc/shadow', type: 'file', size: 1, mode: 33188, uid: 0, gid: 0, owner: 'root', group: 'root', mtime: 0 };
          return c.write(json({ id: r.id, entry }));
        }
        if (r.op === 'start') {
          c.write(json({ id: r.id, pid: 4242 }));
          // Output on the process's stdin channel (the daemon sends there, it never receives), then
          // more than the credit the daemon granted on its stdout, in one write.
          const lies = [frame(2, r.stdin, Buffer.from('x'))];
          for (let i = 0; i < 6; i++) lies.push(frame(2, r.stdout, Buffer.alloc(60000, 65)));
          return c.write(Buffer.concat(lies));
        }
        c.write(json({ id: r.id, error: { errno: 'EIO', message: 'no' } }));
      });
    });
    break;
  case 'inline':
    // Offers inline file contents, then answers a read with more bytes than the daemon asked for.
    connect((c) => {
      c.write(json({ op: 'hello', version: 1, boot: 'abc123', pid: process.pid, processes: [], inline: 65536 }));
      requests(c, (r) => {
        if (r.op === 'ping') return c.write(json({ id: r.id }));
        if (r.op === 'read') {
          const entry = { path: r.path, type: 'file', size: 1, mode: 33188, uid: 0, gid: 0, owner: 'root', group: 'root', mtime: 0 };
          return c.write(json({ id: r.id, entry, data: Buffer.alloc(r.inline + 1000, 65).toString('base64') }));
        }
        c.write(json({ id: r.id, error: { errno: 'EIO', message: 'no' } }));
      });
    });
    break;
  default:
    setInterval(() => {}, 1 << 30);
}
`;

const MODES = ['garbage', 'oversized', 'flood', 'badhello', 'mute', 'connflood', 'liar', 'inline'];
const runtime = RUNTIMES[0];
const script = `/var/lib/cordon-test/hostile-agent-${process.pid}.js`;
let d: TestDaemon;
let calm: Sandbox;

before(async () => {
  writeFileSync(script, HOSTILE);
  chmodSync(script, 0o755);
  d = await startDaemon('agent-hostile', { args: ['--agent-binary', script, '--runtime', runtime] });
  calm = await d.client.create({ hostname: 'hostile-none', labels: { suite: 'agent-hostile' } });
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d.cleanup();
  rmSync(script, { force: true });
});

/** The daemon's resident memory (kB), from /proc. */
function daemonRss(): number {
  const status = readFileSync(`/proc/${d.proc.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
}

describe(`a hostile agent (${runtime})`, () => {
  for (const mode of MODES) {
    test(`${mode}: recorded, the sandbox is served through the exec path, the daemon and its neighbour are fine`, async () => {
      const s = await d.client.create({ hostname: `hostile-${mode}`, labels: { suite: 'agent-hostile' } });
      try {
        // Commands work: a broken agent is dropped and the exec path takes over (a mute one first
        // has to miss its deadline, so a command may fail with unavailable meanwhile).
        // Each try is bounded: a lying agent may claim a process that never ends.
        const tryExec = () => Promise.race([s.exec(['echo', 'ok']), new Promise<never>((_, no) => setTimeout(() => no(new Error('no answer in 30s')), 30_000).unref())]);
        // The inline liar breaks the protocol only when asked for a file (once it is connected: a read
        // before that goes through the exec path).
        if (mode === 'inline') {
          await until('a read the agent answers with too much', async () => {
            await s.files.read('/etc/hostname').catch(() => {});
            return (await s.events_()).some((e) => e.type === 'agent');
          }, 60_000);
        }
        await until('a command works', async () => (await tryExec()).stdout === 'ok\n', 90_000);
        const file = await s.files.write('/tmp/x.txt', 'data');
        assert.equal(file.path, '/tmp/x.txt');
        await until('the stat answers about the path asked', async () => (await s.files.stat('/etc/hostname')).path === '/etc/hostname', 60_000);
        await until('an agent event', async () => (await s.events_()).some((e) => e.type === 'agent'), 60_000);
        const events = (await s.events_()).filter((e) => e.type === 'agent').map((e) => e.message);
        assert.ok(events.some((m) => /broke the protocol|did not connect|did not answer/.test(m)), JSON.stringify(events));
        // The daemon answers, and the sandbox next door works.
        assert.equal((await d.client.health()).status, 'ok');
        assert.equal((await calm.exec(['echo', 'calm'])).stdout, 'calm\n');
      } finally {
        await s.remove().catch(() => {});
      }
      // Generous: a flood must not have been buffered (frames are bounded at 1 MiB, credit at 256 KiB).
      assert.ok(daemonRss() < 600 * 1024, `daemon RSS ${daemonRss()} kB`);
    });
  }
});
