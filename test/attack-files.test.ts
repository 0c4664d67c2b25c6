// Attacks on the file surfaces, from a hostile sandbox and a hostile client: a signed envd URL used
// with another user's Authorization header, downloads of FIFOs and of files whose reader walks away
// (the helper inside the sandbox must not be left behind), writes into a FIFO, and trees whose
// listing or watching would make the daemon hold an unbounded amount of output.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { Sandbox as E2bSandbox } from 'e2b';
import type { Sandbox } from '../src/sdk/index.js';
import { rejectsWith, until } from './helpers/assert.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { stallHttp } from './helpers/stalled-client.js';

const KEY = 'attack-files-key-5b1f';
let d: TestDaemon;

before(async () => {
  // These attacks target the exec path's helpers (busybox file helpers, the polling watcher, runtime
  // execs on the host), so the agent is off here; the agent's own bounds are tested in agent.test.ts.
  d = await startDaemon('attack-files', { apiKey: KEY, args: ['--agent', 'off', '--runtime', RUNTIMES[0], '--max-processes', '8', '--stream-write-deadline', '3s'] });
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d?.cleanup();
});

const auth = () => ({ authorization: `Bearer ${KEY}` });
const sh = async (sb: Sandbox, script: string, user = 'root') => {
  const r = await sb.exec(['sh', '-c', script], { user, timeout: 120 });
  return r.stdout.trim();
};
/** Helper processes of the file API still alive inside the sandbox (busybox started from /.cordon). */
const helpers = async (sb: Sandbox, what: string) => (await sh(sb, `ps -eo args | grep -F '/.cordon/busybox ${what}' | grep -v grep || true`)).split('\n').filter(Boolean);

describe('signed envd URLs', () => {
  test('a signed URL acts as the user it was signed for, whatever Authorization header comes with it', async () => {
    const o = { apiKey: KEY, apiUrl: d.url, sandboxUrl: d.url, domain: 'attack.invalid' };
    const sb = await E2bSandbox.create('base', { ...o, timeoutMs: 300_000 });
    try {
      await sb.commands.run('echo root-only > /root/secret.txt && chmod 600 /root/secret.txt', { user: 'root' });
      const asRoot = { authorization: `Basic ${Buffer.from('root:').toString('base64')}` };

      // Signed for the default user: with or without a root header, it reads as that user.
      const down = await sb.downloadUrl('/root/secret.txt');
      const plain = await fetch(down);
      assert.equal(plain.status, 403, await plain.text());
      const escalated = await fetch(down, { headers: asRoot });
      const text = await escalated.text();
      assert.equal(escalated.status, 403, `a root Authorization header must not lift the signed user: ${text}`);
      assert.doesNotMatch(text, /root-only/);

      // An upload signed for the default user writes as that user, not as the header's.
      const form = new FormData();
      form.append('file', new Blob(['x']), 'up.txt');
      const up = await fetch(await sb.uploadUrl('/home/user/up.txt'), { method: 'POST', body: form, headers: asRoot });
      assert.equal(up.status, 200, await up.text());
      assert.equal((await sb.commands.run('stat -c %U /home/user/up.txt')).stdout.trim(), 'user');

      // The signature does bind a user when one is signed in.
      const signedRoot = await fetch(await sb.downloadUrl('/root/secret.txt', { user: 'root' }));
      assert.equal(signedRoot.status, 200);
      assert.equal(await signedRoot.text(), 'root-only\n');
    } finally {
      await sb.kill();
    }
  });
});

for (const runtime of RUNTIMES) {
  describe(`file helpers on ${runtime}`, () => {
    let sb: Sandbox;
    before(async () => {
      sb = await d.client.create({ runtime });
    });
    after(async () => {
      await sb?.remove().catch(() => {});
    });

    test('a download whose client walks away leaves no helper blocked inside the sandbox', async () => {
      await sh(sb, 'head -c 67108864 /dev/zero > /tmp/big.bin');
      const u = new URL(`${d.url}/v1/sandboxes/${sb.id}/files/content?path=/tmp/big.bin`);
      await new Promise<void>((resolve, reject) => {
        const req = http.get({ host: u.hostname, port: u.port, path: u.pathname + u.search, headers: auth() }, (res) => {
          assert.equal(res.statusCode, 200);
          // Take one chunk, then go away: the daemon's pipe from the helper fills up behind us.
          res.once('data', () => {
            req.destroy();
            resolve();
          });
        });
        req.on('error', (e) => (e.message.includes('socket hang up') ? resolve() : reject(e)));
      });
      await until('the cat helper to be gone', async () => (await helpers(sb, 'cat -- /tmp/big.bin')).length === 0, 30_000);
    });

    test('a download whose client stalls is cut off at the write deadline, and its helper with it', async () => {
      await sh(sb, '[ -f /tmp/big.bin ] || head -c 67108864 /dev/zero > /tmp/big.bin');
      const stalled = await stallHttp(`${d.url}/v1/sandboxes/${sb.id}/files/content?path=/tmp/big.bin`, { method: 'GET', headers: auth(), ready: (t) => t.length > 0 });
      try {
        await until('the cat helper of the stalled download to be gone', async () => (await helpers(sb, 'cat -- /tmp/big.bin')).length === 0, 60_000);
      } finally {
        stalled.stop();
      }
    });

    test('an E2B download (gzip) whose client walks away leaves no helper behind', async () => {
      await sh(sb, '[ -f /tmp/big.bin ] || head -c 67108864 /dev/zero > /tmp/big.bin; head -c 67108864 /dev/urandom > /tmp/rand.bin');
      const e2b = await E2bSandbox.connect(sb.id, { apiKey: KEY, apiUrl: d.url, sandboxUrl: d.url });
      const token = (e2b as unknown as { envdAccessToken: string }).envdAccessToken;
      const u = new URL(d.url);
      await new Promise<void>((resolve, reject) => {
        const req = http.get(
          { host: u.hostname, port: u.port, path: '/files?path=/tmp/rand.bin&username=root', headers: { 'e2b-sandbox-id': sb.id, 'e2b-sandbox-port': '49983', 'x-access-token': token, 'accept-encoding': 'gzip' } },
          (res) => {
            assert.equal(res.statusCode, 200);
            res.once('data', () => {
              req.destroy();
              resolve();
            });
          },
        );
        req.on('error', (e) => (e.message.includes('socket hang up') ? resolve() : reject(e)));
      });
      await until('the cat helper to be gone', async () => (await helpers(sb, 'cat -- /tmp/rand.bin')).length === 0, 30_000);
    });

    test('a FIFO is refused as a download and as an upload target instead of blocking', async () => {
      await sh(sb, 'rm -f /tmp/fifo && mkfifo /tmp/fifo');
      const down = await fetch(`${d.url}/v1/sandboxes/${sb.id}/files/content?path=/tmp/fifo`, { headers: auth(), signal: AbortSignal.timeout(30_000) });
      const dtext = await down.text();
      assert.equal(down.status, 400, dtext);
      assert.match(dtext, /not a regular file/);
      const up = await fetch(`${d.url}/v1/sandboxes/${sb.id}/files/content?path=/tmp/fifo`, {
        method: 'PUT',
        headers: { ...auth(), 'content-type': 'application/octet-stream' },
        body: 'data',
        signal: AbortSignal.timeout(30_000),
      });
      const utext = await up.text();
      assert.equal(up.status, 400, utext);
      assert.match(utext, /not a regular file/);
      assert.deepEqual(await helpers(sb, 'cat'), [], 'no helper is left waiting on the FIFO');
    });
  });
}

describe('processes through the API', () => {
  test('processes and file operations running through the API are capped per sandbox (each is a host process)', async () => {
    const sb = await d.client.create({ runtime: 'crun' });
    try {
      const procs = [];
      for (let i = 0; i < 8; i++) procs.push(await sb.startProcess(['sleep', '600']));
      const refused = await rejectsWith(sb.startProcess(['sleep', '600']), 'rate_limited', /--max-processes/);
      assert.equal(refused.status, 429);
      await rejectsWith(sb.files.read('/etc/hostname'), 'rate_limited');
      await sb.kill(procs[0].id);
      await until('a slot to come back once a process ends', async () => (await sb.files.read('/etc/hostname').then(() => true, () => false)), 30_000);
      // The read's own helper gives its slot back when it is reaped, which can be just after its answer.
      await until('a process to start in the freed slot', async () => sb.startProcess(['sleep', '600']).then((p) => (procs.push(p), true), () => false), 30_000);
      assert.equal(procs.length, 9);
    } finally {
      await sb.remove({ force: true }).catch(() => {});
    }
  });
});

describe('clients that send without end', () => {
  test('stdin for a process that does not read it is held only up to the stream bound', async () => {
    const sb = await d.client.create({ runtime: 'crun' });
    try {
      const p = await sb.startProcess(['sleep', '600'], { stdin: true });
      const chunk = Buffer.alloc(4 * 1024 * 1024, 'i').toString('base64');
      const sends = Array.from({ length: 10 }, () =>
        fetch(`${d.url}/v1/sandboxes/${sb.id}/processes/${p.id}/stdin`, {
          method: 'POST',
          headers: { ...auth(), 'content-type': 'application/json' },
          body: JSON.stringify({ data: chunk, encoding: 'base64' }),
          signal: AbortSignal.timeout(10_000),
        }).then((r) => r.status, () => 'pending'),
      );
      const statuses = await Promise.all(sends);
      assert.ok(statuses.filter((s) => s === 429).length >= 7, `most writers are refused at once: ${statuses.join(',')}`);
    } finally {
      await sb.remove({ force: true }).catch(() => {});
    }
  });

  test('an E2B multipart upload past the part limit is refused, not cut short', async () => {
    const o = { apiKey: KEY, apiUrl: d.url, sandboxUrl: d.url, domain: 'attack.invalid' };
    const sb = await E2bSandbox.create('base', { ...o, timeoutMs: 300_000 });
    try {
      const form = new FormData();
      for (let i = 0; i < 1001; i++) form.append('file', new Blob([`${i}`]), `/tmp/parts/p${i}.txt`);
      const r = await fetch(await sb.uploadUrl(), { method: 'POST', body: form });
      const text = await r.text();
      assert.equal(r.status, 413, text.slice(0, 300));
      assert.match(text, /more than 1000/);
    } finally {
      await sb.kill();
    }
  });
});

describe('listings and watchers of huge trees', () => {
  // /tmp/deep: a tree whose listing is over 64 MiB (deep directories with long names, many files at
  // the bottom: cheap to make, expensive to print); /tmp/wide: 150 000 files. crun only: it is the
  // quickest to build them on.
  let sb: Sandbox;
  let deep = '';
  before(async () => {
    sb = await d.client.create({ runtime: 'crun' });
    const made = await sb.exec(
      [
        'python3',
        '-c',
        [
          'import os',
          "os.makedirs('/tmp/wide/sub')",
          "for i in range(150000): open('/tmp/wide/sub/f%06d' % i, 'w').close()",
          "os.makedirs('/tmp/deep'); os.chdir('/tmp/deep'); parts=[]",
          "for i in range(14):\n  n=('d%02d' % i)+'x'*247; os.mkdir(n); os.chdir(n); parts.append(n)",
          "for i in range(20000): open(('f%05d' % i)+'y'*200,'w').close()",
          "print('/tmp/deep/'+'/'.join(parts))",
        ].join('\n'),
      ],
      { timeout: 600 },
    );
    assert.equal(made.exit_code, 0, made.stderr);
    deep = made.stdout.trim();
  });
  after(async () => {
    await sb?.remove().catch(() => {});
  });

  test('a listing whose output would exceed the bound is refused with a clear error', async () => {
    const r = await fetch(`${d.url}/v1/sandboxes/${sb.id}/files/list?path=/tmp/deep&depth=20`, { headers: auth(), signal: AbortSignal.timeout(300_000) });
    const text = await r.text();
    assert.equal(r.status, 413, text.slice(0, 300));
    assert.match(text, /narrower|smaller depth/);
    // A listing of the same tree that fits still works.
    const ok = await fetch(`${d.url}/v1/sandboxes/${sb.id}/files/list?path=/tmp/deep&depth=2`, { headers: auth() });
    assert.equal(ok.status, 200);
    assert.ok(deep.length > 3000);
  });

  test('an E2B recursive watch of such a tree is refused instead of being polled for ever', async () => {
    const o = { apiKey: KEY, apiUrl: d.url, sandboxUrl: d.url, domain: 'attack.invalid' };
    const e2b = await E2bSandbox.connect(sb.id, o);
    const started = await e2b.files.watchDir('/tmp/wide', () => {}, { recursive: true, timeoutMs: 0 }).then(
      async (h) => {
        await h.stop();
        return 'watching';
      },
      (e: Error) => e.message,
    );
    assert.match(started, /too many|too large|narrower/, started);
    assert.deepEqual(await helpers(sb, 'sh -c cd'), [], 'the watcher shell is gone');
  });
});
