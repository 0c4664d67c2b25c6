// E2B fidelity through the official `e2b` SDK: what E2B's API and envd do, point by point — listing
// order and paging, file entries, signed URLs and streamed multipart, create options, metrics history,
// the --domain host, and the API key / envd token checks. File behaviour runs on every runtime.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { AuthenticationError, Sandbox, SandboxError, type FilesystemEvent } from 'e2b';
import { sleep, until } from './helpers/assert.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';

const KEY = 'e2b_fidelity_key';
const DOMAIN = 'cordon.test';
const daemonArgs = (runtime: string) => ['--runtime', runtime, '--domain', DOMAIN, '--max-upload', '8m'];
let d: TestDaemon;
let o: { apiKey: string; apiUrl: string; sandboxUrl: string; domain: string };
const connect = () => (o = { apiKey: KEY, apiUrl: d.url, sandboxUrl: d.url, domain: DOMAIN });

before(async () => {
  d = await startDaemon('e2b-fidelity', { apiKey: KEY, args: daemonArgs(RUNTIMES[0]) });
  connect();
});
after(async () => {
  for (const s of await Sandbox.list({ ...o, query: { state: ['running', 'paused'] } }).nextItems().catch(() => [])) await Sandbox.kill(s.sandboxId, o).catch(() => {});
  await d?.cleanup();
});

/** A raw request to the daemon (for what the SDK does not expose: status codes, messages, Host). */
function raw(method: string, path: string, headers: Record<string, string>, body?: Buffer | string): Promise<{ status: number; body: string }> {
  const u = new URL(d.url);
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = http.request({ host: u.hostname, port: u.port, method, path, headers }, (res) => {
      answered = true;
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    // A server that answers before reading the whole body may close while the body is still going out.
    req.on('error', (e) => answered || reject(e));
    req.end(body);
  });
}
const envdHeaders = (sb: Sandbox, token = (sb as unknown as { envdAccessToken: string }).envdAccessToken) => ({
  'E2b-Sandbox-Id': sb.sandboxId,
  'E2b-Sandbox-Port': '49983',
  'X-Access-Token': token,
});
const message = (body: string) => (JSON.parse(body) as { message: string }).message;
/** The sandbox's `agent` and `error` events, for a failure message. */
const agentEvents = async (id: string) =>
  (await d.client.sandbox(id).events_().catch(() => [])).filter((e) => e.type === 'agent' || e.type === 'error').map((e) => e.message);

describe('e2b api key and envd tokens', () => {
  test('the control plane needs the daemon key; one sandbox envd token does not open another', async () => {
    assert.equal((await raw('GET', '/v2/sandboxes', {})).status, 401);
    await assert.rejects(Sandbox.list({ ...o, apiKey: 'e2b_wrong' }).nextItems(), (e: unknown) => e instanceof AuthenticationError);
    const a = await Sandbox.create({ ...o, timeoutMs: 120_000 });
    const b = await Sandbox.create({ ...o, timeoutMs: 120_000 });
    try {
      const list = (sb: Sandbox, token?: string) =>
        raw('POST', '/process.Process/List', { ...envdHeaders(sb, token), 'content-type': 'application/json' }, '{}');
      assert.equal((await list(b)).status, 200);
      const crossed = await list(b, (a as unknown as { envdAccessToken: string }).envdAccessToken);
      assert.equal(crossed.status, 401, 'sandbox A envd token is refused by sandbox B');
      assert.match(message(crossed.body), /unauthorized access/);
    } finally {
      await a.kill();
      await b.kill();
    }
  });
});

describe('e2b listing', () => {
  test('newest first by default, order=asc reverses it, paging is stable in both orders, startedAfter is inclusive, metadata decodes', async () => {
    const tag = `l${Date.now()}`;
    const made: Sandbox[] = [];
    try {
      for (const [i, note] of ['b c', 'x&y=z', '100% +1'].entries()) {
        made.push(await Sandbox.create({ ...o, timeoutMs: 180_000, metadata: { suite: tag, note, i: String(i) } }));
      }
      const ids = made.map((s) => s.sandboxId);
      const q = { metadata: { suite: tag } };
      assert.deepEqual((await Sandbox.list({ ...o, query: q }).nextItems()).map((s) => s.sandboxId), [...ids].reverse(), 'newest first by default');
      assert.deepEqual((await Sandbox.list({ ...o, query: q, order: 'asc' }).nextItems()).map((s) => s.sandboxId), ids);

      for (const order of ['desc', 'asc'] as const) {
        const pager = Sandbox.list({ ...o, query: q, order, limit: 1 });
        const seen: string[] = [];
        seen.push(...(await pager.nextItems()).map((s) => s.sandboxId));
        // A sandbox created mid-way must not shift the pages already handed out.
        const late = await Sandbox.create({ ...o, timeoutMs: 180_000, metadata: { suite: tag, late: order } });
        made.push(late);
        while (pager.hasNext) seen.push(...(await pager.nextItems()).map((s) => s.sandboxId));
        const expect = order === 'desc' ? [...ids].reverse() : [...ids, ...made.slice(3).map((s) => s.sandboxId)];
        assert.deepEqual(seen, expect, `paging in ${order} order`);
      }

      const second = await made[1].getInfo();
      const since = await Sandbox.list({ ...o, query: { ...q, startedAfter: second.startedAt }, order: 'asc' }).nextItems();
      assert.equal(since[0]?.sandboxId, ids[1], 'a sandbox started exactly at startedAfter is included');
      assert.ok(!since.some((s) => s.sandboxId === ids[0]));

      for (const [i, note] of ['b c', 'x&y=z', '100% +1'].entries()) {
        const hit = await Sandbox.list({ ...o, query: { metadata: { suite: tag, note } } }).nextItems();
        assert.deepEqual(hit.map((s) => s.sandboxId), [ids[i]], `metadata ${JSON.stringify(note)}`);
      }

      const first = await fetch(`${d.url}/v2/sandboxes?limit=1&metadata=${encodeURIComponent(`suite=${tag}`)}`, { headers: { 'X-API-KEY': KEY } });
      const token = first.headers.get('x-next-token')!;
      const mixed = await fetch(`${d.url}/v2/sandboxes?order=asc&limit=1&nextToken=${encodeURIComponent(token)}`, { headers: { 'X-API-KEY': KEY } });
      assert.equal(mixed.status, 400, 'a token is only valid in the order it was issued for');
      assert.equal((await fetch(`${d.url}/v2/sandboxes?order=sideways`, { headers: { 'X-API-KEY': KEY } })).status, 400);
    } finally {
      for (const s of made) await s.kill().catch(() => {});
    }
  });
});

describe('e2b create options, domain and metrics', () => {
  test('mcp is accepted and the SDK reports its own gateway error; public traffic, host mask and lifecycle are kept', async () => {
    const err = await Sandbox.create('base', { ...o, timeoutMs: 60_000, mcp: { exa: { apiKey: 'not-used' } } } as Parameters<typeof Sandbox.create>[1]).then(
      () => assert.fail('the template has no mcp-gateway'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof SandboxError, String(err));
    assert.match((err as Error).message, /Failed to start MCP gateway/);

    const sb = await Sandbox.create({
      ...o,
      timeoutMs: 120_000,
      network: { allowPublicTraffic: false, maskRequestHost: 'localhost:${PORT}' },
      lifecycle: { onTimeout: 'pause', autoResume: true },
    });
    try {
      assert.equal(typeof sb.trafficAccessToken, 'string', 'a sandbox without public traffic gets a traffic access token');
      const info = await sb.getInfo();
      assert.equal(info.network?.allowPublicTraffic, false);
      assert.equal(info.network?.maskRequestHost, 'localhost:${PORT}');
      assert.equal(info.lifecycle?.autoResume, true);
      const other = await Sandbox.connect(sb.sandboxId, { ...o, domain: 'sdk-default.invalid' });
      assert.equal(other.sandboxDomain, DOMAIN, 'connect answers with the daemon --domain, whatever the client assumed');
      assert.equal(other.getHost(8000), `8000-${sb.sandboxId}.${DOMAIN}`);

      // autoResume: traffic to a paused sandbox wakes it.
      await sb.pause();
      assert.equal((await sb.getInfo()).state, 'paused');
      assert.equal((await sb.commands.run('echo awake')).stdout, 'awake\n');
      assert.equal((await sb.getInfo()).state, 'running');
    } finally {
      await sb.kill();
    }
  });

  test('a PORT-ID.DOMAIN host reaches the sandbox; another domain does not', async () => {
    const sb = await Sandbox.create({ ...o, timeoutMs: 120_000 });
    try {
      const token = (sb as unknown as { envdAccessToken: string }).envdAccessToken;
      const rpc = (host: string) => raw('POST', '/process.Process/List', { host, 'X-Access-Token': token, 'content-type': 'application/json' }, '{}');
      assert.equal((await rpc(`49983-${sb.sandboxId}.${DOMAIN}`)).status, 200);
      assert.equal((await rpc(`49983-${sb.sandboxId}.${DOMAIN}:443`)).status, 200);
      assert.notEqual((await rpc(`49983-${sb.sandboxId}.elsewhere.test`)).status, 200);
    } finally {
      await sb.kill();
    }
  });

  test('metrics keep a 5 s history with disk figures and honour start and end', async () => {
    const sb = await Sandbox.create({ ...o, timeoutMs: 180_000 });
    const disked = await d.client.create({ disk: '64m' });
    try {
      let m: Awaited<ReturnType<Sandbox['getMetrics']>> = [];
      await until('two samples', async () => (m = await sb.getMetrics()).length >= 2, 60_000);
      for (const s of m) assert.ok(s.diskTotal > 0 && s.diskUsed > 0 && s.diskUsed <= s.diskTotal && s.memTotal > 0, JSON.stringify(s));
      assert.ok(m[1].timestamp > m[0].timestamp);
      // start and end are whole unix seconds, both inclusive.
      const secs = (t: Date) => Math.floor(t.getTime() / 1000);
      const second = new Date(secs(m[1].timestamp) * 1000);
      const one = await sb.getMetrics({ start: second, end: second });
      assert.ok(one.length >= 1 && one.every((s) => secs(s.timestamp) === secs(m[1].timestamp)), JSON.stringify(one));
      assert.deepEqual(await sb.getMetrics({ start: new Date(Date.now() + 3_600_000) }), []);
      assert.deepEqual(await sb.getMetrics({ end: new Date(m[0].timestamp.getTime() - 60_000) }), []);
      await assert.rejects(sb.getMetrics({ start: new Date(), end: new Date(Date.now() - 60_000) }));

      const dm = await Sandbox.getMetrics(disked.id, o);
      const total = dm[dm.length - 1].diskTotal;
      assert.ok(total > 32 * 1024 * 1024 && total <= 64 * 1024 * 1024, `the 64m disk limit is the total (${total})`);
    } finally {
      await sb.kill();
      await disked.remove({ force: true }).catch(() => {});
    }
  });
});

for (const runtime of RUNTIMES) {
  describe(`e2b files on ${runtime}`, () => {
    let sb: Sandbox;
    before(async () => {
      if (runtime !== RUNTIMES[0]) {
        await d.cleanup();
        d = await startDaemon(`e2b-fidelity-${runtime}`, { apiKey: KEY, args: daemonArgs(runtime) });
        connect();
      }
      sb = await Sandbox.create({ ...o, timeoutMs: 600_000 });
    });
    after(async () => sb?.kill().catch(() => {}));

    test('entries as envd reports them: permission bits, WalkDir order, resolved symlink targets', async () => {
      await sb.commands.run(
        'mkdir -p /tmp/ent/sub /tmp/ent/a && touch /tmp/ent/a/z /tmp/ent/a-b && echo x > /tmp/ent/b.txt && chmod 4750 /tmp/ent/b.txt && ' +
          'ln -s ../ent/b.txt /tmp/ent/link && ln -s sub /tmp/ent/dirlink && ln -s /nowhere /tmp/ent/dangling',
      );
      const dir = await sb.files.getInfo('/tmp/ent/sub');
      assert.equal(dir.type, 'dir');
      assert.equal(dir.mode, 0o755, 'mode holds only the permission bits');
      assert.equal(dir.permissions, 'drwxr-xr-x');
      const file = await sb.files.getInfo('/tmp/ent/b.txt');
      assert.equal(file.mode, 0o750);
      assert.equal(file.permissions, 'urwxr-x---');

      const link = await sb.files.getInfo('/tmp/ent/link');
      assert.equal(link.symlinkTarget, '/tmp/ent/b.txt', 'the absolute path of the target');
      assert.equal(link.type, 'file', 'a symlink reports its target type');
      assert.equal(link.mode, 0o750);
      assert.equal(link.permissions, 'Lrwxrwxrwx');
      const dangling = await sb.files.getInfo('/tmp/ent/dangling');
      assert.equal(dangling.symlinkTarget, '/tmp/ent/dangling', 'an unresolvable link names itself, as envd does');

      const listed = await sb.files.list('/tmp/ent', { depth: 2 });
      assert.deepEqual(
        listed.map((e) => e.path),
        ['/tmp/ent/a', '/tmp/ent/a/z', '/tmp/ent/a-b', '/tmp/ent/b.txt', '/tmp/ent/dirlink', '/tmp/ent/link', '/tmp/ent/sub'],
      );
      assert.equal(listed.find((e) => e.name === 'dirlink')?.type, 'dir');
      assert.deepEqual((await sb.files.list('/tmp/ent/dirlink')).map((e) => e.path), [], 'a symlinked directory is listed as the directory');
    });

    test('remove of a missing path succeeds; writes and makeDir create parents for the default user, at the top level too', async () => {
      await sb.files.remove('/tmp/never-was-here');
      await sb.files.write('/top-multipart/deep/a.txt', 'A');
      await sb.files.write('/top-octet/deep/b.txt', 'B', { useOctetStream: true });
      assert.equal(await sb.files.makeDir('/top-made/deeper'), true);
      const st = await sb.commands.run('stat -c "%U %a %n" /top-multipart /top-multipart/deep /top-multipart/deep/a.txt /top-octet/deep /top-made /top-made/deeper');
      for (const line of st.stdout.trim().split('\n')) assert.match(line, /^user (755|644) /, line);
      assert.equal(await sb.files.read('/top-octet/deep/b.txt'), 'B');
    });

    test('watchDir reports a file written through the API even when it is removed right after', async () => {
      await sb.files.makeDir('/tmp/quick');
      const events: FilesystemEvent[] = [];
      const handle = await sb.files.watchDir('/tmp/quick', (e) => void events.push(e));
      try {
        for (let i = 0; i < 3; i++) {
          await sb.files.write(`/tmp/quick/f${i}.txt`, 'data');
          await sb.commands.run(`rm /tmp/quick/f${i}.txt`);
        }
        const seen = (name: string, type: string) => events.some((e) => e.name === name && e.type === type);
        await until('every create and remove', () => [0, 1, 2].every((i) => seen(`f${i}.txt`, 'create') && seen(`f${i}.txt`, 'remove')), 20_000).catch(() => {});
        for (let i = 0; i < 3; i++) assert.ok(seen(`f${i}.txt`, 'create') && seen(`f${i}.txt`, 'remove'), JSON.stringify(events));
      } finally {
        await handle.stop();
      }
    });

    test('signed URLs: invalid or expired signatures are 401 with envd messages; a file part without a filename is accepted', async () => {
      const plain = new FormData();
      plain.append('file', 'from a plain form field');
      const up = await fetch(await sb.uploadUrl('/tmp/plain.txt'), { method: 'POST', body: plain });
      assert.equal(up.status, 200, await up.clone().text());
      assert.equal(await sb.files.read('/tmp/plain.txt'), 'from a plain form field');

      const expired = await fetch(await sb.downloadUrl('/tmp/plain.txt', { useSignatureExpiration: -30 }));
      assert.equal(expired.status, 401);
      assert.equal(message(await expired.text()), 'signature is already expired');
      const tampered = new URL(await sb.downloadUrl('/tmp/plain.txt'));
      tampered.searchParams.set('path', '/etc/shadow');
      const bad = await fetch(tampered);
      assert.equal(bad.status, 401);
      assert.equal(message(await bad.text()), 'invalid signature');
      const unsigned = await raw('GET', '/files?path=/tmp/plain.txt', { 'E2b-Sandbox-Id': sb.sandboxId, 'E2b-Sandbox-Port': '49983' });
      assert.equal(unsigned.status, 401);
      assert.equal(message(unsigned.body), 'missing signature query parameter');
    });

    test('multipart uploads are streamed into the sandbox as they arrive, and bounded by --max-upload', async () => {
      const boundary = 'cordonboundary7';
      const part = (name: string, body: string) =>
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\nContent-Type: application/octet-stream\r\n\r\n${body}\r\n`;
      const u = new URL(d.url);
      let answer = '';
      let status = 0;
      const req = http.request({
        host: u.hostname,
        port: u.port,
        method: 'POST',
        path: '/files',
        headers: { ...envdHeaders(sb), 'content-type': `multipart/form-data; boundary=${boundary}` },
      });
      const done = new Promise<void>((resolve, reject) => {
        req.on('response', (res) => {
          status = res.statusCode ?? 0;
          res.on('data', (c) => (answer += c));
          res.on('end', resolve);
        });
        req.on('error', reject);
      });
      req.write(part('/tmp/stream-1.txt', 'first file') + `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="/tmp/stream-2.txt"\r\n\r\nsecond `);
      // The first file is in the sandbox while the request is still open: nothing waits for the whole body.
      // A command that fails names the sandbox's agent events: a rare Unavailable here was the agent
      // connection ended by late acks for the refused upload below (fixed; agent-connection-unit).
      const run = (cmd: string) =>
        sb.commands.run(cmd).catch(async (e: Error) => {
          throw new Error(`${e.message}; the sandbox's agent events: ${JSON.stringify(await agentEvents(sb.sandboxId))}`);
        });
      await until('the first part to land before the body ends', async () => (await run('cat /tmp/stream-1.txt 2>/dev/null || true')).stdout === 'first file', 30_000);
      req.end(`file\r\n--${boundary}--\r\n`);
      await done;
      assert.equal(status, 200, answer);
      assert.deepEqual((JSON.parse(answer) as { path: string }[]).map((e) => e.path), ['/tmp/stream-1.txt', '/tmp/stream-2.txt']);
      assert.equal(await sb.files.read('/tmp/stream-2.txt'), 'second file');

      const big = Buffer.alloc(9 * 1024 * 1024, 'x');
      const tooBig = await raw('POST', '/files?path=/tmp/too-big.bin', { ...envdHeaders(sb), 'content-type': 'application/octet-stream' }, big);
      assert.equal(tooBig.status, 413);
      assert.match(message(tooBig.body), /--max-upload/);
      assert.equal((await run('echo alive')).stdout, 'alive\n', 'the sandbox and daemon carry on');
      await sleep(0);
    });
  });
}
