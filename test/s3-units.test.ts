// Units of the S3 sync: spec checks, the --s3-sync flag, the manifest journal (a cut line is redone),
// and the credential store's file modes. No daemon, no sandbox.
import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { after, test } from 'node:test';
import { parseS3SyncFlag } from '../src/cli/commands/s3.js';
import { S3CredentialStore } from '../src/s3/credentials.js';
import { SyncManifest } from '../src/s3/manifest.js';
import { checkSyncSpec, checkSyncSpecs } from '../src/s3/sync-spec.js';

const dir = `/tmp/cordon-s3-units-${process.pid}`;
after(() => rmSync(dir, { recursive: true, force: true }));

test('sync specs: defaults, normalisation and refusals naming the field', () => {
  const s = checkSyncSpec({ bucket: 'work', prefix: 'a//b', path: '/work/', mode: 'hooks', credentials: 'c', endpoint: 'http://127.0.0.1:9000/' });
  assert.deepEqual(s, { bucket: 'work', prefix: 'a/b/', path: '/work', mode: 'hooks', endpoint: 'http://127.0.0.1:9000', region: 'us-east-1', credentials: 'c', pathStyle: true, maxFileBytes: 5 * 1024 ** 3 });
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ bucket: 'A!' }, /s3_sync\.bucket/],
    [{ prefix: '../x' }, /s3_sync\.prefix/],
    [{ prefix: '/abs' }, /s3_sync\.prefix/],
    [{ path: 'rel' }, /s3_sync\.path/],
    [{ path: '/' }, /cannot sync \//],
    [{ mode: 'fuse' }, /s3_sync\.mode/],
    [{ endpoint: 'ftp://x' }, /s3_sync\.endpoint/],
    [{ endpoint: 'http://k:s@x' }, /credentials are registered by name/],
    [{ credentials: '../etc/passwd' }, /s3_sync\.credentials/],
    [{ readOnly: true }, /only a mount/],
  ];
  for (const [patch, msg] of bad) {
    assert.throws(() => checkSyncSpec({ bucket: 'work', path: '/w', mode: 'hooks', credentials: 'c', ...patch } as never), msg, JSON.stringify(patch));
  }
  assert.throws(() => checkSyncSpecs([{ bucket: 'work', path: '/w', mode: 'hooks', credentials: 'c' }, { bucket: 'work', path: '/w/x', mode: 'hooks', credentials: 'c' }]), /overlap/);
});

test('--s3-sync flag: fields, booleans, required ones', () => {
  assert.deepEqual(parseS3SyncFlag('bucket=b,prefix=p,path=/w,mode=mount,credentials=c,readonly,path-style=false,max-file-size=1g'), {
    bucket: 'b', prefix: 'p', path: '/w', mode: 'mount', credentials: 'c', read_only: true, path_style: false, max_file_size: '1g',
  });
  assert.throws(() => parseS3SyncFlag('bucket=b,path=/w,mode=hooks'), /credentials= is required/);
  assert.throws(() => parseS3SyncFlag('bucket=b,path=/w,mode=hooks,credentials=c,secret=x'), /unknown field "secret"/);
});

test('manifest: each transfer is journaled; a line cut by a crash is ignored; compact folds the journal', async () => {
  const file = `${dir}/m/0.json`;
  const m = await SyncManifest.load(file);
  await m.set('a', { size: 1, mtime: '1.0', etag: '"x"' });
  await m.set('b', { size: 2, mtime: '2.0', etag: '"y"' });
  await m.set('a', undefined);
  appendFileSync(`${file}.journal`, '{"k":"c","e":{"si');
  const again = await SyncManifest.load(file);
  assert.deepEqual([...again.entries.keys()], ['b']);
  await again.compact();
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { b: { size: 2, mtime: '2.0', etag: '"y"' } });
  assert.deepEqual([...(await SyncManifest.load(file)).entries.keys()], ['b']);
});

test('credential store: 0600 files in a 0700 directory, names checked, the list shows no secret', async () => {
  mkdirSync(dir, { recursive: true });
  const st = new S3CredentialStore(`${dir}/creds`);
  await st.init();
  await st.put('one', { accessKeyId: 'AKIAEXAMPLE1234', secretAccessKey: 'very-secret' });
  assert.equal(statSync(`${dir}/creds`).mode & 0o777, 0o700);
  assert.equal(statSync(`${dir}/creds/one.json`).mode & 0o777, 0o600);
  assert.deepEqual(await st.list(), [{ name: 'one', access_key_hint: 'AKIA…' }]);
  assert.equal((await st.get('one')).secretAccessKey, 'very-secret');
  await assert.rejects(st.put('../x', { accessKeyId: 'a', secretAccessKey: 'b' }), /not a credentials name/);
  await assert.rejects(st.put('two', { accessKeyId: 'a:b', secretAccessKey: 'b' }), /access_key_id/);
  await assert.rejects(st.get('missing'), /cordon s3 credentials add missing/);
  await st.remove('one');
  assert.deepEqual(await st.list(), []);
});
