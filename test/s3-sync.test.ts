// S3 sync against a real S3-compatible server (s3rver, its own process on loopback), with the AWS SDK
// as the test's client: hooks (pull at create and start, push at stop and removal), on_demand (only
// on the sync call), mount (s3fs, under runsc and crun); credentials never visible in a sandbox; an
// interrupted push completed by the next; conflicts reported; a hostile sandbox (a link to
// /etc/shadow, a FIFO, a huge sparse file) cannot make the host read it or block the sync.
import assert from 'node:assert/strict';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { Sandbox, SyncResult } from '../src/sdk/index.js';
import { cli, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { mountsMentioning, rejectsWith } from './helpers/assert.js';
import { startFaultyRelay, startS3Server, type FaultyRelay, type S3Server } from './helpers/s3-server.js';

const BUCKET = 'work';
let s3: S3Server;
let relay: FaultyRelay;
let d: TestDaemon;
let c: S3Client;
const credsFile = `/tmp/cordon-s3-creds-${process.pid}.json`;

async function keys(prefix: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let token: string | undefined;
  do {
    const p = await c.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix, ContinuationToken: token }));
    for (const o of p.Contents ?? []) out.set(o.Key!.slice(prefix.length), o.ETag!);
    token = p.IsTruncated ? p.NextContinuationToken : undefined;
  } while (token);
  return out;
}
async function text(key: string): Promise<string> {
  return (await c.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }))).Body!.transformToString();
}
const put = (key: string, body: string | Buffer) => c.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));
const sh = async (s: Sandbox, script: string) => {
  const r = await s.exec(['sh', '-c', script], { user: 'root' });
  assert.equal(r.exit_code, 0, `${script}: ${r.stderr}`);
  return r.stdout;
};
const syncSpec = (prefix: string, mode: string, extra: Record<string, unknown> = {}) => ({ bucket: BUCKET, prefix, path: '/work', mode, endpoint: relay.endpoint, credentials: 'test', ...extra }) as never;
const s3Events = async (s: Sandbox) => (await s.events_()).filter((e) => e.type === 's3_sync');

before(async () => {
  s3 = await startS3Server('sync', [BUCKET]);
  relay = await startFaultyRelay(s3.endpoint);
  c = s3.client();
  d = await startDaemon('s3-sync');
  writeFileSync(credsFile, JSON.stringify({ access_key_id: s3.key, secret_access_key: s3.secret }), { mode: 0o600 });
  const r = await cli(d, ['s3', 'credentials', 'add', 'test', '--file', credsFile, '--json']);
  assert.equal(r.code, 0, r.stderr);
});
after(async () => {
  for (const s of (await d?.client.list().catch(() => [])) ?? []) await d.client.remove(s.id, { force: true }).catch(() => {});
  assert.deepEqual(mountsMentioning(d.dataDir), [], 'no S3 mount stays behind');
  await d?.cleanup();
  c?.destroy();
  await relay?.close();
  await s3?.stop();
  rmSync(credsFile, { force: true });
});

describe('credentials', () => {
  test('stored 0600 under the data directory, never shown by the API or the CLI; bad specs refused', async () => {
    const file = `${d.dataDir}/s3/credentials/test.json`;
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const ls = await cli(d, ['s3', 'credentials', 'ls', '--json']);
    assert.equal(ls.code, 0);
    assert.deepEqual(JSON.parse(ls.stdout).map((x: { name: string }) => x.name), ['test']);
    assert.ok(!ls.stdout.includes(s3.secret) && !ls.stdout.includes(s3.key));
    await rejectsWith(d.client.create({ s3_sync: [syncSpec('x/', 'hooks', { credentials: 'nope' })] }), 'invalid_argument', /not registered.*s3 credentials add nope/);
    await rejectsWith(d.client.create({ s3_sync: [syncSpec('x/', 'hooks', { bucket: 'Bad_Bucket!' })] }), 'invalid_argument', /bucket/);
    await rejectsWith(d.client.create({ s3_sync: [syncSpec('x/', 'hooks', { endpoint: `http://u:p@127.0.0.1:${s3.port}` })] }), 'invalid_argument', /endpoint/);
    await rejectsWith(d.client.create({ s3_sync: [syncSpec('../x/', 'hooks')] }), 'invalid_argument', /prefix/);
    const bad = await cli(d, ['create', '--s3-sync', 'bucket=work,path=/work,mode=sometimes,credentials=test']);
    assert.equal(bad.code, 64, bad.stderr);
    assert.equal((await d.client.list()).length, 0, 'nothing was created');
  });
});

describe('hooks', () => {
  test('pulled at create, pushed at stop (links, FIFOs and huge files skipped and reported), pulled at start, conflicts reported', async () => {
    await put('h/a.txt', 'alpha\n');
    await put('h/sub/b.txt', 'beta\n');
    await put('h/gone.txt', 'to be deleted in the bucket\n');
    const created = await cli(d, ['create', '--json', '--s3-sync', `bucket=${BUCKET},prefix=h,path=/work,mode=hooks,endpoint=${relay.endpoint},credentials=test`]);
    assert.equal(created.code, 0, created.stderr);
    const s = await d.client.get(JSON.parse(created.stdout).id);
    assert.equal(await sh(s, 'cat /work/a.txt /work/sub/b.txt'), 'alpha\nbeta\n');
    assert.equal(s.info.config.s3_sync[0].credentials, 'test');
    assert.ok(!JSON.stringify(s.info).includes(s3.secret));

    // Changes inside, including what a hostile sandbox would plant.
    const big = randomBytes(20 * 1024 * 1024);
    await s.files.write('/work/big.bin', big, { user: 'root' });
    await sh(s, [
      'echo changed > /work/a.txt', 'echo new > /work/c.txt', 'rm /work/sub/b.txt',
      'ln -s /etc/shadow /work/shadow', 'mkfifo /work/fifo', 'truncate -s 6G /work/sparse',
    ].join(' && '));
    const putsBefore = relay.puts;
    await s.stop();
    const after = await keys('h/');
    assert.deepEqual([...after.keys()].sort(), ['a.txt', 'big.bin', 'c.txt', 'gone.txt']);
    assert.equal(await text('h/a.txt'), 'changed\n');
    assert.ok((await c.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'h/big.bin' }))).ContentLength === big.length);
    assert.ok(relay.puts - putsBefore >= 3 + 2, 'the 20 MiB file went up in parts (multipart)');
    const push = (await s3Events(s)).find((e) => e.data?.hook === 'stop')!;
    assert.ok(push, 'the push at stop is an event');
    const skipped = (push.data!.skipped as { path: string; reason: string }[]).map((x) => `${x.path}: ${x.reason}`).join('\n');
    assert.match(skipped, /\/work\/shadow: a symbolic link/);
    assert.match(skipped, /\/work\/fifo: not a regular file/);
    assert.match(skipped, /\/work\/sparse: larger/);
    assert.equal(push.data!.deleted, 1);

    // Changed in the bucket while stopped: the start pulls it; deleted there: deleted here.
    await put('h/c.txt', 'from the bucket\n');
    await c.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: 'h/gone.txt' }));
    await s.start();
    assert.equal(await sh(s, 'cat /work/c.txt; for f in a.txt big.bin gone.txt; do test -e /work/$f && echo $f || echo no-$f; done'), 'from the bucket\na.txt\nbig.bin\nno-gone.txt\n');
    const pullAtStart = (await s3Events(s)).find((e) => e.data?.hook === 'start')!;
    assert.equal(pullAtStart.data!.complete, true, JSON.stringify(pullAtStart.data));

    // Both sides change a.txt: the sync call reports the conflict, keeps both, and the CLI exits 65.
    await put('h/a.txt', 'bucket side\n');
    await sh(s, 'echo sandbox side > /work/a.txt');
    const r = await cli(d, ['sync', s.id, '--json']);
    assert.equal(r.code, 65, r.stderr);
    const res = JSON.parse(r.stdout) as SyncResult;
    assert.equal(res.complete, false);
    assert.ok(res.reports.some((x) => x.conflicts.some((k) => k.path === '/work/a.txt' && /changed in the bucket and here/.test(k.reason))));
    assert.equal(await text('h/a.txt'), 'bucket side\n');
    assert.equal(await sh(s, 'cat /work/a.txt'), 'sandbox side\n');
    assert.ok((await s3Events(s)).some((e) => e.data?.hook === 'call' && (e.data.conflicts_total as number) > 0), 'the conflict is an event');

    // Removal (forced, as it runs) pushes first; what it could not push is named in the daemon's log.
    await s.remove({ force: true });
    assert.match(d.log(), new RegExp(`sandbox ${s.id} removed with force although its S3 push did not complete: .*1 conflicts`));
    assert.ok(!JSON.stringify(await keys('')).includes('shadow'));
    assert.ok(!readFileSync('/etc/shadow', 'utf8').split('\n').some((l) => l && JSON.stringify([...(after.values())]).includes(l)));
  });
});

describe('on_demand', () => {
  test('only the sync call moves files; an interrupted push is completed by the next one', async () => {
    await put('o/seed.txt', 'seed\n');
    const s = await d.client.create({ runtime: 'crun', s3_sync: [syncSpec('o/', 'on_demand')] });
    assert.equal((await s.exec(['sh', '-c', 'ls /work 2>&1 || true'])).stdout.includes('seed.txt'), false, 'nothing pulled at create');
    const pulled = await s.sync('pull');
    assert.equal(pulled.complete, true);
    assert.equal(pulled.reports[0].files, 1);
    assert.equal(await sh(s, 'cat /work/seed.txt'), 'seed\n');

    await sh(s, 'for i in $(seq 1 30); do echo "file $i" > /work/f$i.txt; done');
    relay.failAfterPuts(5);
    const first = await s.sync('push');
    relay.heal();
    assert.equal(first.complete, false);
    assert.ok(first.reports[0].failed.length > 0, 'the cut-off push reports its failures');
    assert.ok(first.reports[0].files >= 1 && first.reports[0].files < 30);
    assert.ok((await s3Events(s)).some((e) => (e.data?.failed_total as number) > 0), 'and records them as an event');
    const second = await s.sync('push');
    assert.equal(second.complete, true, JSON.stringify(second.reports[0].failed));
    assert.equal(second.reports[0].conflicts.length, 0, 'files the first push finished are not taken for conflicts');
    assert.equal(first.reports[0].files + second.reports[0].files, 30, 'each file went up once');
    const k = await keys('o/');
    assert.equal(k.size, 31);
    assert.equal(await text('o/f17.txt'), 'file 17\n');

    // Stop does not push in this mode.
    await sh(s, 'echo late > /work/late.txt');
    await s.stop();
    assert.equal((await keys('o/')).has('late.txt'), false);
    await s.remove();
  });
});

describe('mount', () => {
  for (const runtime of ['runsc', 'crun'] as const) {
    test(`${runtime}: the prefix is a directory in the sandbox (s3fs); no credential is visible inside; unmounted at removal`, async () => {
      const prefix = `m-${runtime}/`;
      await put(`${prefix}hello.txt`, `hello ${runtime}\n`);
      const s = await d.client.create({ runtime, s3_sync: [{ bucket: BUCKET, prefix, path: '/s3', mode: 'mount', endpoint: s3.endpoint, credentials: 'test' }] });
      assert.equal(await sh(s, 'cat /s3/hello.txt'), `hello ${runtime}\n`);
      await sh(s, 'echo written inside > /s3/out.txt && sync');
      assert.equal(await text(`${prefix}out.txt`), 'written inside\n');
      assert.equal(mountsMentioning(`${d.dataDir}/s3/mounts/${s.id}`).length, 1);
      // The secret and key id: not in the environment, /proc, the mount table or any file (patterns on stdin, so
      // that no command line inside holds them).
      const seen = await s.exec(['sh', '-c', "env; cat /proc/self/mountinfo /proc/mounts; cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null | tr '\\0' ' '; grep -rlF -f /dev/stdin / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev --exclude-dir=s3 2>/dev/null && echo FOUND-IN''-FILES; true"], { user: 'root', timeout: 120_000, stdin: `${s3.secret}\n${s3.key}\n` });
      assert.ok(!seen.stdout.includes(s3.secret), 'secret visible inside');
      assert.ok(!seen.stdout.includes(s3.key), 'key id visible inside');
      assert.ok(!seen.stdout.includes('FOUND-IN-FILES'), `a file inside holds a credential: ${seen.stdout}`);
      assert.match(seen.stdout, /\/s3/);
      await s.remove({ force: true });
      assert.deepEqual(mountsMentioning(`${d.dataDir}/s3/mounts/${s.id}`), []);
    });
  }
});
