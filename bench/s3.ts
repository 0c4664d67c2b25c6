// S3 push/pull throughput through cordon's sync (files cross through the sandbox's agent) against the
// AWS SDK used directly from the host (the AWS CLI-equivalent client: lib-storage multipart, same
// part size and queue), both against one s3rver on loopback in the same run. Figures: a 256 MiB file,
// and 1,000 small (4 KiB) files, each direction. BENCH_RUNS (default 3) samples per figure.
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type { Sandbox } from '../src/sdk/index.js';
import { PART_BYTES } from '../src/engine/s3-transfer.js';
import { startDaemon, type TestDaemon } from '../test/helpers/daemon.js';
import { startS3Server } from '../test/helpers/s3-server.js';
import { pct } from './lib/stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const BIG = 256 * 1024 * 1024;
const SMALL = 1000;
const SMALL_BYTES = 4096;
const BUCKET = 'bench';
const tmp = `/tmp/cordon-bench-s3-${process.pid}`;

const ms = async (fn: () => Promise<unknown>) => {
  const t = performance.now();
  await fn();
  return performance.now() - t;
};

async function pool<T>(items: T[], n: number, fn: (t: T) => Promise<void>) {
  let i = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (i < items.length) await fn(items[i++]);
  }));
}

function line(name: string, xs: number[], bytes: number): string {
  const f = (p: number) => pct(xs, p).toFixed(0).padStart(7);
  return `  ${name.padEnd(34)} p50 ${f(50)} ms  p90 ${f(90)} ms  (${((bytes / 1024 ** 2) / (pct(xs, 50) / 1000)).toFixed(1).padStart(6)} MiB/s at p50, n=${xs.length})`;
}

async function sdkUpload(c: S3Client, key: string, body: Readable | Buffer) {
  await new Upload({ client: c, params: { Bucket: BUCKET, Key: key, Body: body }, partSize: PART_BYTES, queueSize: 4 }).done();
}

async function sdkDownload(c: S3Client, key: string, file: string) {
  const r = await c.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  await pipeline(r.Body as Readable, createWriteStream(file));
}

async function syncOk(s: Sandbox, dir: 'pull' | 'push', files: number) {
  const r = await s.sync(dir);
  const moved = r.reports.reduce((n, x) => n + x.files, 0);
  if (!r.complete || moved !== files) throw new Error(`${dir} moved ${moved} of ${files} files: ${JSON.stringify(r.reports.map((x) => [x.failed.slice(0, 3), x.conflicts.slice(0, 3)]))}`);
}

async function main(): Promise<void> {
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(join(tmp, 'small'), { recursive: true });
  const s3 = await startS3Server('bench', [BUCKET]);
  let d: TestDaemon | undefined;
  try {
    const c = s3.client();
    d = await startDaemon('bench-s3');
    await d.client.s3.credentials.add('bench', { access_key_id: s3.key, secret_access_key: s3.secret });
    const spec = (prefix: string, path: string) => ({ bucket: BUCKET, prefix, path, mode: 'on_demand' as const, endpoint: s3.endpoint, credentials: 'bench' });
    const big = await d.client.create({ s3_sync: [spec('cordon-big/', '/big')] });
    const small = await d.client.create({ s3_sync: [spec('cordon-small/', '/small')] });
    const bigFile = join(tmp, 'big.bin');
    writeFileSync(bigFile, randomBytes(BIG));
    for (let i = 0; i < SMALL; i++) writeFileSync(join(tmp, 'small', `f${i}`), randomBytes(SMALL_BYTES));
    const r1 = await big.exec(['sh', '-c', `mkdir -p /big && head -c ${BIG} /dev/urandom > /big/f.bin`]);
    const r2 = await small.exec(['sh', '-c', `mkdir -p /small && for i in $(seq 0 ${SMALL - 1}); do head -c ${SMALL_BYTES} /dev/urandom > /small/f$i; done`]);
    if (r1.exit_code || r2.exit_code) throw new Error(`preparing the sandboxes failed: ${r1.stderr}${r2.stderr}`);

    const t = { bigPush: [] as number[], bigPushSdk: [] as number[], bigPull: [] as number[], bigPullSdk: [] as number[], smallPush: [] as number[], smallPushSdk: [] as number[], smallPull: [] as number[], smallPullSdk: [] as number[] };
    const keys = Array.from({ length: SMALL }, (_, i) => `f${i}`);
    for (let run = 0; run < RUNS; run++) {
      process.stderr.write(`run ${run + 1}/${RUNS}\n`);
      // Push: the sandbox's file changed (touched), then pushed; the SDK uploads the same size from a host file.
      await big.exec(['touch', '/big/f.bin']);
      t.bigPush.push(await ms(() => syncOk(big, 'push', 1)));
      t.bigPushSdk.push(await ms(() => sdkUpload(c, 'sdk-big/f.bin', createReadStream(bigFile))));
      // Pull: the object changed in the bucket (not timed), then pulled; the SDK downloads it to a host file.
      await sdkUpload(c, 'cordon-big/f.bin', createReadStream(bigFile));
      t.bigPull.push(await ms(() => syncOk(big, 'pull', 1)));
      t.bigPullSdk.push(await ms(() => sdkDownload(c, 'sdk-big/f.bin', join(tmp, 'big.out'))));

      await small.exec(['sh', '-c', 'touch /small/*']);
      t.smallPush.push(await ms(() => syncOk(small, 'push', SMALL)));
      t.smallPushSdk.push(await ms(() => pool(keys, 8, async (k) => void (await c.send(new PutObjectCommand({ Bucket: BUCKET, Key: `sdk-small/${k}`, Body: createReadStream(join(tmp, 'small', k)), ContentLength: SMALL_BYTES }))))));
      await pool(keys, 8, async (k) => void (await c.send(new PutObjectCommand({ Bucket: BUCKET, Key: `cordon-small/${k}`, Body: randomBytes(SMALL_BYTES) }))));
      t.smallPull.push(await ms(() => syncOk(small, 'pull', SMALL)));
      t.smallPullSdk.push(await ms(() => pool(keys, 8, async (k) => sdkDownload(c, `sdk-small/${k}`, join(tmp, `small.out`)))));
    }
    const ratio = (a: number[], b: number[]) => `${(pct(a, 50) / pct(b, 50)).toFixed(2)}x the SDK's time at p50`;
    console.log(`S3 sync throughput (s3rver on loopback, runsc sandbox, ${RUNS} runs; baseline: AWS SDK v3 from the host, same part size ${PART_BYTES / 1024 ** 2} MiB)`);
    console.log('256 MiB file');
    console.log(line('push  cordon sync', t.bigPush, BIG));
    console.log(line('push  AWS SDK (lib-storage)', t.bigPushSdk, BIG));
    console.log(`    ${ratio(t.bigPush, t.bigPushSdk)}`);
    console.log(line('pull  cordon sync', t.bigPull, BIG));
    console.log(line('pull  AWS SDK (GetObject)', t.bigPullSdk, BIG));
    console.log(`    ${ratio(t.bigPull, t.bigPullSdk)}`);
    console.log(`${SMALL} files of ${SMALL_BYTES / 1024} KiB`);
    console.log(line('push  cordon sync', t.smallPush, SMALL * SMALL_BYTES));
    console.log(line('push  AWS SDK (8 in flight)', t.smallPushSdk, SMALL * SMALL_BYTES));
    console.log(`    ${ratio(t.smallPush, t.smallPushSdk)}`);
    console.log(line('pull  cordon sync', t.smallPull, SMALL * SMALL_BYTES));
    console.log(line('pull  AWS SDK (8 in flight)', t.smallPullSdk, SMALL * SMALL_BYTES));
    console.log(`    ${ratio(t.smallPull, t.smallPullSdk)}`);
    await big.remove({ force: true });
    await small.remove({ force: true });
  } finally {
    await d?.cleanup();
    await s3.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
