import { posix } from 'node:path';
import { CordonError } from '../errors/registry.js';
import { CREDENTIALS_NAME } from './credentials.js';

/**
 * One S3 sync of a sandbox: a bucket prefix and a directory inside the sandbox.
 * - hooks: pulled at create and start, pushed at stop, snapshot and removal, and on a sync call;
 * - on_demand: only on a sync call;
 * - mount: the prefix is the directory (s3fs on the host, bound into the sandbox); nothing to sync.
 */
export interface S3SyncSpec {
  bucket: string;
  /** Key prefix, '' or ending in '/'. */
  prefix: string;
  /** Absolute directory inside the sandbox. */
  path: string;
  mode: 'hooks' | 'on_demand' | 'mount';
  /** http(s) URL of an S3-compatible endpoint; absent means AWS itself. */
  endpoint?: string;
  region: string;
  /** Name of credentials registered with cordon s3 credentials add. */
  credentials: string;
  /** Bucket in the path (most S3-compatible servers) rather than the host name. Default true with an endpoint. */
  pathStyle: boolean;
  /** Files larger than this are skipped and reported (default 5 GiB). */
  maxFileBytes: number;
  /** mount only: the directory is read-only inside the sandbox. */
  readOnly?: boolean;
}

export const S3_MODES = ['hooks', 'on_demand', 'mount'] as const;
export const DEFAULT_MAX_FILE_BYTES = 5 * 1024 ** 3;
const MAX_MAX_FILE_BYTES = 5 * 1024 ** 4;
const BUCKET = /^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$/;

const bad = (field: string, what: string) => new CordonError('invalid_argument', `s3_sync.${field}: ${what}`, { field: `s3_sync.${field}` });

/** Check and normalise a spec from any surface; the error names the field to fix. */
export function checkSyncSpec(s: Partial<S3SyncSpec> & { maxFileBytes?: number }): S3SyncSpec {
  if (typeof s.bucket !== 'string' || !BUCKET.test(s.bucket)) throw bad('bucket', 'a bucket name: 3-63 lowercase letters, digits, . _ -');
  let prefix = s.prefix ?? '';
  if (typeof prefix !== 'string' || prefix.length > 512 || prefix.includes('\0') || prefix.startsWith('/') || prefix.split('/').some((p) => p === '..' || p === '.')) {
    throw bad('prefix', 'a key prefix without a leading "/", "." or ".." segments or NUL, up to 512 characters');
  }
  prefix = prefix.replace(/\/+/g, '/');
  if (prefix && !prefix.endsWith('/')) prefix += '/';
  if (typeof s.path !== 'string' || !s.path.startsWith('/') || s.path.includes('\0') || s.path.split('/').includes('..') || s.path.length > 4096) {
    throw bad('path', 'an absolute directory inside the sandbox, without ".." or NUL');
  }
  const path = posix.normalize(s.path).replace(/\/+$/, '');
  if (!path) throw bad('path', 'cannot sync / itself; pick a directory such as /work');
  if (!S3_MODES.includes(s.mode as never)) throw bad('mode', `use ${S3_MODES.join(', ')}`);
  let endpoint: string | undefined;
  if (s.endpoint !== undefined) {
    let u: URL;
    try {
      u = new URL(s.endpoint);
    } catch {
      throw bad('endpoint', 'an http:// or https:// URL');
    }
    if (!['http:', 'https:'].includes(u.protocol) || u.username || u.password || u.search || u.hash) {
      throw bad('endpoint', 'an http:// or https:// URL without user, password, query or fragment (credentials are registered by name)');
    }
    endpoint = u.origin + u.pathname.replace(/\/+$/, '');
  }
  const region = s.region ?? 'us-east-1';
  if (!/^[a-z0-9-]{1,32}$/.test(region)) throw bad('region', 'a region name such as us-east-1');
  if (typeof s.credentials !== 'string' || !CREDENTIALS_NAME.test(s.credentials)) throw bad('credentials', 'the name of credentials registered with cordon s3 credentials add NAME');
  const maxFileBytes = s.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
  if (!Number.isSafeInteger(maxFileBytes) || maxFileBytes < 1 || maxFileBytes > MAX_MAX_FILE_BYTES) throw bad('max_file_size', 'from 1 byte to 5 TiB');
  if (s.readOnly && s.mode !== 'mount') throw bad('read_only', 'only a mount can be read-only');
  return {
    bucket: s.bucket,
    prefix,
    path,
    mode: s.mode as S3SyncSpec['mode'],
    ...(endpoint ? { endpoint } : {}),
    region,
    credentials: s.credentials,
    pathStyle: s.pathStyle ?? !!endpoint,
    maxFileBytes,
    ...(s.readOnly ? { readOnly: true } : {}),
  };
}

/** Specs of one sandbox: at most 8, no two on the same path or nested in each other. */
export function checkSyncSpecs(specs: Partial<S3SyncSpec>[]): S3SyncSpec[] {
  if (specs.length > 8) throw bad('', 'at most 8 syncs per sandbox');
  const out = specs.map(checkSyncSpec);
  for (const a of out) {
    for (const b of out) {
      if (a !== b && (a.path === b.path || a.path.startsWith(`${b.path}/`))) throw bad('path', `${a.path} and ${b.path} overlap; give each sync its own directory`);
    }
  }
  return out;
}
