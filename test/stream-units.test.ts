// Unit tests of one module each: the output fan-out's flow control (fake sinks and a fake source)
// the proxy's streaming body rewriters, and the events SSE stream over a fake store.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import http, { type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { describe, test } from 'node:test';
import { OutputFanout, type EventSink, type StreamDrop } from '../src/engine/output-fanout.js';
import { UnobservedThrottle } from '../src/engine/output-throttle.js';
import { CappedBodyRewrite, SseLineRewrite } from '../src/net/body-rewrite.js';
import { followEvents } from '../src/api/routes/event-stream.js';
import type { SandboxEvent } from '../src/engine/types.js';
import type { SandboxStore } from '../src/store/sandboxes.js';
import { until } from './helpers/assert.js';
import { sleep } from './helpers/assert.js';

/** A sink whose backlog the test sets, and whose drain the test triggers. */
function fakeSink() {
  const s = {
    got: [] as number[],
    backlogBytes: 0,
    drains: [] as (() => void)[],
    dropped: undefined as StreamDrop | undefined,
    sink: undefined as unknown as EventSink<number>,
    drain() {
      s.backlogBytes = 0;
      for (const cb of s.drains.splice(0)) cb();
    },
  };
  s.sink = {
    push: (ev) => s.got.push(ev),
    backlog: () => s.backlogBytes,
    onDrain: (cb) => s.drains.push(cb),
    drop: (why) => (s.dropped = why),
  };
  return s;
}

function fakeSource() {
  const src = { paused: false, pause: () => (src.paused = true), resume: () => (src.paused = false) };
  return src;
}

describe('output fan-out', () => {
  test('a congested subscriber pauses the source until it drains; others still get every event', () => {
    const f = new OutputFanout<number>({ highWaterBytes: 100, writeDeadlineMs: 60_000 });
    const src = fakeSource();
    f.setSource(src);
    const slow = fakeSink();
    const fast = fakeSink();
    f.add(slow.sink);
    f.add(fast.sink);
    f.deliver(1);
    assert.equal(src.paused, false);
    slow.backlogBytes = 101;
    f.deliver(2);
    assert.equal(src.paused, true, 'paused while one subscriber is above the mark');
    slow.drain();
    assert.equal(src.paused, false, 'resumed once it drained');
    assert.deepEqual(slow.got, [1, 2]);
    assert.deepEqual(fast.got, [1, 2]);
  });

  test('a subscriber stalled past the write deadline is cut off and the source resumes', async () => {
    const f = new OutputFanout<number>({ highWaterBytes: 10, writeDeadlineMs: 50 });
    const src = fakeSource();
    f.setSource(src);
    const s = fakeSink();
    f.add(s.sink);
    s.backlogBytes = 11;
    f.deliver(1);
    assert.equal(src.paused, true);
    await sleep(150);
    assert.equal(s.dropped?.kind, 'stalled');
    assert.equal(src.paused, false);
    assert.equal(f.size, 0);
  });

  test('unsubscribing a congested subscriber resumes the source; finish keeps the deadline of a congested one', async () => {
    const f = new OutputFanout<number>({ highWaterBytes: 10, writeDeadlineMs: 50 });
    const src = fakeSource();
    f.setSource(src);
    const a = fakeSink();
    const off = f.add(a.sink);
    a.backlogBytes = 11;
    f.deliver(1);
    off();
    assert.equal(src.paused, false);

    const b = fakeSink();
    f.add(b.sink);
    b.backlogBytes = 11;
    f.deliver(2);
    f.finish();
    assert.equal(src.paused, false, 'nothing left to pause for after the last event');
    await sleep(150);
    assert.equal(b.dropped?.kind, 'stalled', 'a client that never takes the rest is still cut off');
  });

  test('dropAll ends every stream with the reason and delivers nothing more', () => {
    const f = new OutputFanout<number>({ highWaterBytes: 10, writeDeadlineMs: 60_000 });
    const s = fakeSink();
    f.add(s.sink);
    f.dropAll({ kind: 'sandbox_gone', message: 'gone' });
    f.deliver(1);
    assert.deepEqual(s.got, []);
    assert.deepEqual(s.dropped, { kind: 'sandbox_gone', message: 'gone' });
  });
});

describe('unobserved output throttle', () => {
  test('holds the pipes once the burst is spent and lets them flow again when the bucket refills', async () => {
    const holds: boolean[] = [];
    const t = new UnobservedThrottle((held) => holds.push(held), 1000, 500);
    t.take(400);
    assert.deepEqual(holds, [], 'within the burst nothing is held');
    t.take(200);
    t.take(200); // already held: no second timer
    assert.deepEqual(holds, [true]);
    await until('released', () => holds.length === 2, 2000);
    assert.deepEqual(holds, [true, false]);
    t.stop();
  });
});

describe('streaming body rewrite', () => {
  const reps = [{ find: 'secret', replace: 'XX' }];
  const run = (t: NodeJS.ReadWriteStream, chunks: string[]) => text(Readable.from(chunks.map((c) => Buffer.from(c))).pipe(t));

  test('a whole body within the cap is rewritten, also across chunk boundaries', async () => {
    let over = false;
    assert.equal(await run(new CappedBodyRewrite(reps, 100, () => (over = true)), ['a sec', 'ret b secret']), 'a XX b XX');
    assert.equal(over, false);
  });

  test('a body past the cap passes unchanged and is reported once', async () => {
    let over = 0;
    const chunks = ['secret ', 'x'.repeat(60), 'y'.repeat(60), ' secret'];
    assert.equal(await run(new CappedBodyRewrite(reps, 100, () => over++), chunks), chunks.join(''));
    assert.equal(over, 1);
  });

  test('SSE: data lines are rewritten when split across chunks; other lines are not', async () => {
    const out = await run(new SseLineRewrite(reps, 100, () => {}), ['event: secret\nda', 'ta: a sec', 'ret\n\ndata: secret']);
    assert.equal(out, 'event: secret\ndata: a XX\n\ndata: XX');
  });

  test('SSE: a line longer than the cap passes unchanged to its end; the next line is rewritten again', async () => {
    let over = 0;
    // The rest of the long line looks like a data line of its own; it must still pass unchanged.
    const long = `data: secret ${'z'.repeat(150)}`;
    const out = await run(new SseLineRewrite(reps, 100, () => over++), [long.slice(0, 80), long.slice(80), 'data: secret\ndata: secret\n']);
    assert.equal(out, `${long}data: secret\ndata: XX\n`);
    assert.equal(over, 1);
  });
});

describe('events stream', () => {
  /** The two things followEvents uses of the store: events after a seq, and the live feed. */
  function fakeStore() {
    const all: SandboxEvent[] = [];
    const feed = new EventEmitter();
    return {
      store: { feed, events: (id: string, after: number, limit: number) => all.filter((e) => e.sandboxId === id && e.seq > after).slice(0, limit) } as unknown as SandboxStore,
      add(id: string) {
        const e: SandboxEvent = { seq: all.length + 1, sandboxId: id, ts: Date.now(), type: 'network', message: 'x'.repeat(1000) };
        all.push(e);
        feed.emit('event', e);
      },
    };
  }

  async function serve(fn: (res: ServerResponse) => void) {
    const responses: ServerResponse[] = [];
    const srv = http.createServer((_req, res) => {
      responses.push(res);
      fn(res);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/`, responses, close: () => (srv.closeAllConnections(), srv.close()) };
  }

  test('a paused reader holds no more than the mark in the server; when it reads again it gets every event, in order', async () => {
    const f = fakeStore();
    const s = await serve((res) => followEvents(res, f.store, 'sb', {}, { highWaterBytes: 64 * 1024, writeDeadlineMs: 60_000 }));
    try {
      const seqs: number[] = [];
      let buf = '';
      let paused = true;
      const res = await new Promise<http.IncomingMessage>((r) => http.get(s.url, r));
      res.pause();
      await until('the stream to be followed', () => s.responses.length === 1);
      let peak = 0;
      for (let i = 0; i < 20_000; i++) {
        f.add('sb');
        if (i % 100 === 0) f.add('other');
        peak = Math.max(peak, s.responses[0].writableLength);
        if (i % 1000 === 0) await new Promise((r) => setImmediate(r));
      }
      assert.ok(peak < 64 * 1024 + 4096, `server-side backlog stays at the mark (peak ${peak})`);
      res.on('data', (c: Buffer) => {
        buf += c.toString();
        const end = buf.lastIndexOf('\n') + 1;
        for (const m of buf.slice(0, end).matchAll(/^id: (\d+)$/gm)) seqs.push(Number(m[1]));
        buf = buf.slice(end);
      });
      paused = false;
      res.resume();
      await until('every event to arrive', () => seqs.length >= 20_000, 60_000);
      assert.equal(paused, false);
      const ours = seqs.filter((q, i) => i === 0 || q > seqs[i - 1]);
      assert.equal(ours.length, seqs.length, 'in order, no duplicates');
      assert.equal(seqs.length, 20_000, 'none lost, none of the other sandbox');
      res.destroy();
    } finally {
      s.close();
    }
  });

  test('a reader that stays behind past the write deadline is cut off', async () => {
    const f = fakeStore();
    const s = await serve((res) => followEvents(res, f.store, 'sb', {}, { highWaterBytes: 16 * 1024, writeDeadlineMs: 100 }));
    try {
      const res = await new Promise<http.IncomingMessage>((r) => http.get(s.url, r));
      res.pause();
      await until('the stream to be followed', () => s.responses.length === 1);
      for (let i = 0; i < 20_000 && !s.responses[0].destroyed; i++) {
        f.add('sb');
        if (i % 1000 === 0) await new Promise((r) => setImmediate(r));
      }
      await until('the server to cut the reader off', () => s.responses[0].destroyed, 10_000);
    } finally {
      s.close();
    }
  });
});
