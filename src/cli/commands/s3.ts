import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { CordonError } from '../../errors/registry.js';
import type { S3SyncOptions, SyncResult } from '../../sdk/s3.js';
import { client, printJson, table } from '../output.js';

const FIELDS: Record<string, keyof S3SyncOptions> = {
  bucket: 'bucket', prefix: 'prefix', path: 'path', mode: 'mode', endpoint: 'endpoint', region: 'region', credentials: 'credentials',
  'path-style': 'path_style', 'max-file-size': 'max_file_size', readonly: 'read_only', ro: 'read_only',
};
const BOOL: Record<string, boolean> = { true: true, false: false, '1': true, '0': false };

/** `bucket=B,prefix=P,path=/work,mode=hooks,endpoint=URL,credentials=NAME[,region=R][,path-style][,max-file-size=1g][,readonly]` */
export function parseS3SyncFlag(v: string): S3SyncOptions {
  const out: Record<string, unknown> = {};
  for (const field of v.split(',')) {
    const i = field.indexOf('=');
    const key = (i < 0 ? field : field.slice(0, i)).trim().toLowerCase();
    const val = i < 0 ? undefined : field.slice(i + 1);
    const name = FIELDS[key];
    if (!name) throw new CordonError('invalid_argument', `--s3-sync "${v}": unknown field "${key}"; use ${Object.keys(FIELDS).join(', ')}`);
    if (name === 'path_style' || name === 'read_only') {
      if (val !== undefined && !(val in BOOL)) throw new CordonError('invalid_argument', `--s3-sync "${v}": ${key} is true or false`);
      out[name] = val === undefined ? true : BOOL[val];
    } else {
      if (val === undefined) throw new CordonError('invalid_argument', `--s3-sync "${v}": ${key} needs a value (${key}=...)`);
      out[name] = val;
    }
  }
  for (const k of ['bucket', 'path', 'mode', 'credentials'] as const) {
    if (out[k] === undefined) throw new CordonError('invalid_argument', `--s3-sync "${v}": ${k}= is required`);
  }
  return out as unknown as S3SyncOptions;
}

/** A JSON file with one sync object or an array of them (the REST API's s3_sync field). */
export function readS3SyncFile(path: string): S3SyncOptions[] {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new CordonError('invalid_argument', `--s3-sync-file ${path}: ${(e as Error).message}`);
  }
  return (Array.isArray(v) ? v : [v]) as S3SyncOptions[];
}

function printReports(r: SyncResult): void {
  const rows = [['DIRECTION', 'PATH', 'BUCKET/PREFIX', 'FILES', 'BYTES', 'DELETED', 'UNCHANGED', 'SKIPPED', 'CONFLICTS', 'FAILED']];
  for (const x of r.reports) rows.push([x.direction, x.path, `${x.bucket}/${x.prefix}`, String(x.files), String(x.bytes), String(x.deleted), String(x.unchanged), String(x.skipped.length), String(x.conflicts.length), String(x.failed.length)]);
  process.stdout.write(`${table(rows)}\n`);
  for (const x of r.reports) {
    for (const c of x.conflicts) process.stdout.write(`conflict: ${c.path}: ${c.reason}\n`);
    for (const f of x.failed) process.stdout.write(`failed: ${f.path}: ${f.reason}\n`);
    for (const s of x.skipped) process.stdout.write(`skipped: ${s.path}: ${s.reason}\n`);
  }
}

export function registerS3(program: Command): void {
  const s3 = program.command('s3').description('S3 sync: credentials the daemon keeps by name (never shown back, never in a sandbox)');
  const creds = s3.command('credentials').description('register, list and remove S3 credentials');

  creds
    .command('add')
    .description('register credentials under NAME: from --file (JSON with access_key_id, secret_access_key[, session_token]) or the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY[, AWS_SESSION_TOKEN])')
    .argument('<name>')
    .option('--file <file>', 'JSON file with access_key_id and secret_access_key')
    .option('--from-env', 'read AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (the default without --file)')
    .option('--json', 'print JSON')
    .action(async (name: string, o: { file?: string; json?: boolean }) => {
      let c: { access_key_id?: string; secret_access_key?: string; session_token?: string };
      if (o.file) {
        try {
          c = JSON.parse(readFileSync(o.file, 'utf8'));
        } catch (e) {
          throw new CordonError('invalid_argument', `--file ${o.file}: ${(e as Error).message}`);
        }
      } else {
        c = { access_key_id: process.env.AWS_ACCESS_KEY_ID, secret_access_key: process.env.AWS_SECRET_ACCESS_KEY, session_token: process.env.AWS_SESSION_TOKEN || undefined };
      }
      if (!c.access_key_id || !c.secret_access_key) {
        throw new CordonError('invalid_argument', o.file ? `--file ${o.file} needs access_key_id and secret_access_key` : 'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give --file FILE');
      }
      const r = await client().s3.credentials.add(name, { access_key_id: c.access_key_id, secret_access_key: c.secret_access_key, ...(c.session_token ? { session_token: c.session_token } : {}) });
      if (o.json) printJson(r);
      else process.stdout.write(`${r.name}\n`);
    });

  creds
    .command('ls')
    .description('list registered credentials (names and the access key\'s first characters)')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const list = await client().s3.credentials.list();
      if (o.json) return printJson(list);
      process.stdout.write(`${table([['NAME', 'ACCESS KEY'], ...list.map((c) => [c.name, c.access_key_hint])])}\n`);
    });

  creds
    .command('rm')
    .description('forget credentials')
    .argument('<names...>')
    .option('--json', 'print JSON')
    .action(async (names: string[], o: { json?: boolean }) => {
      for (const n of names) await client().s3.credentials.remove(n);
      if (o.json) printJson({ removed: names });
      else process.stdout.write(`${names.join('\n')}\n`);
    });

  program
    .command('sync')
    .description('run a sandbox\'s S3 syncs (hooks and on_demand) now; both directions unless --pull or --push. Exits 65 when a conflict or failure is left')
    .argument('<id>')
    .option('--pull', 'only bucket -> sandbox')
    .option('--push', 'only sandbox -> bucket')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { pull?: boolean; push?: boolean; json?: boolean }) => {
      if (o.pull && o.push) throw new CordonError('invalid_argument', 'give --pull or --push, not both (neither syncs both ways)');
      const sb = await client().get(id);
      const r = await sb.sync(o.pull ? 'pull' : o.push ? 'push' : 'both');
      if (o.json) printJson(r);
      else printReports(r);
      if (!r.complete) process.exitCode = 65;
    });
}
