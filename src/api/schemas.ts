import { z } from 'zod';
import { networkBody } from '../net/schema.js';
import { RUNTIME_NAMES } from '../config.js';
import { FILE_OPS, MAX_EVENT_PATHS, MAX_FILE_RULES, MAX_GLOB_LENGTH } from '../volume/file-rules.js';
import { parseDuration, parseSize } from '../util/units.js';

// Every input the REST API accepts, validated at the edge. Messages name the field and the fix.

const size = (field: string, min = 0) =>
  z.union([z.string(), z.number()]).transform((v, ctx) => {
    const n = parseSize(v);
    if (n === undefined || n < min) {
      ctx.addIssue({ code: 'custom', message: `${field} must be a size like 128m, 1g or a byte count${min ? ` (at least ${min} bytes)` : ''}` });
      return z.NEVER;
    }
    return n;
  });

const duration = (field: string) =>
  z.union([z.string(), z.number()]).transform((v, ctx) => {
    const n = parseDuration(v);
    if (n === undefined) {
      ctx.addIssue({ code: 'custom', message: `${field} must be a duration like 30s, 5m, 1h or a number of seconds` });
      return z.NEVER;
    }
    return n;
  });

const absPath = z
  .string()
  .min(1)
  .max(4096)
  .refine((p) => p.startsWith('/') && !p.includes('\0') && !p.split('/').includes('..'), 'must be an absolute path without ".." or NUL');

const envMap = z
  .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'environment variable names are letters, digits and _'), z.string().max(131072).refine((v) => !v.includes('\0'), 'must not contain NUL'))
  .refine((m) => Object.keys(m).length <= 1024, 'at most 1024 variables');

const labelMap = z
  .record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/, 'label keys are up to 63 letters, digits, . _ / -'), z.string().max(256))
  .refine((m) => Object.keys(m).length <= 64, 'at most 64 labels');

const argv = z.array(z.string().max(131072).refine((a) => !a.includes('\0'), 'arguments must not contain NUL')).max(4096);
const userSpec = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$/, 'a user name, uid, or user:group');

/** A snapshot's id or name, also in E2B's "cordon/NAME:default" form. */
export const snapshotRef = z.string().min(1).max(256).regex(/^[A-Za-z0-9][A-Za-z0-9._:/-]*$/, 'a snapshot id or name (letters, digits, . _ - and E2B\'s / and :)');

/** One S3 sync at create (checked again, with the credentials' existence, by the engine). */
export const s3SyncBody = z
  .object({
    bucket: z.string().min(3).max(63),
    prefix: z.string().max(512).optional(),
    path: absPath,
    mode: z.enum(['hooks', 'on_demand', 'mount'], { message: 'mode: use hooks, on_demand or mount' }),
    endpoint: z.string().max(2048).optional(),
    region: z.string().max(32).optional(),
    credentials: z.string().min(1).max(63),
    path_style: z.boolean().optional(),
    max_file_size: size('s3_sync.max_file_size', 1).optional(),
    read_only: z.boolean().optional(),
  })
  .strict();

export const createSandboxBody = z
  .object({
    template: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'template names are lowercase letters, digits, . _ -').optional(),
    image: z.string().min(1).max(512).optional(),
    pull_policy: z.enum(['missing', 'always', 'never']).optional(),
    runtime: z.enum(RUNTIME_NAMES as [string, ...string[]]).optional(),
    env: envMap.optional(),
    workdir: absPath.optional(),
    cmd: argv.optional(),
    entrypoint: argv.optional(),
    user: userSpec.optional(),
    cpus: z.number().positive().max(256).optional(),
    memory: size('memory', 32 * 1024 * 1024).optional(),
    pids: z.number().int().min(8).max(1_000_000).optional(),
    disk: size('disk', 16 * 1024 * 1024).optional(),
    timeout: duration('timeout').optional(),
    idle_pause: z.boolean({ message: 'idle_pause: true (default) or false (never paused for idleness)' }).optional(),
    on_timeout: z.enum(['kill', 'pause', 'stop'], { message: 'on_timeout: use kill (remove), pause or stop' }).optional(),
    labels: labelMap.optional(),
    metadata: labelMap.optional(),
    read_only_rootfs: z.boolean().optional(),
    tmpfs: z.array(z.object({ path: absPath, size: size('tmpfs.size', 4096).default(64 * 1024 * 1024), options: z.array(z.enum(['noexec', 'exec', 'nosuid', 'nodev', 'ro', 'rw'])).optional() }).strict()).max(16).optional(),
    volumes: z
      .array(z.object({ name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'a volume name or id'), path: absPath, read_only: z.boolean().optional(), readOnly: z.boolean().optional() }).strict())
      .max(32)
      .optional(),
    mounts: z
      .array(
        z
          .object({
            type: z.enum(['bind', 'overlay', 'tmpfs']),
            source: z.string().min(1).max(4096).refine((p) => !p.includes('\0'), 'must not contain NUL').optional(),
            target: absPath,
            read_only: z.boolean().optional(),
            tmpfs_size: size('mounts.tmpfs_size', 4096).optional(),
          })
          .strict()
          .refine((m) => (m.type === 'tmpfs') === (m.source === undefined), { message: 'bind and overlay mounts need a source; tmpfs takes none', path: ['source'] }),
      )
      .max(32)
      .optional(),
    file_rules: z
      .array(
        z
          .object({
            action: z.enum(['allow', 'block'], { message: 'action: allow or block' }),
            ops: z.array(z.enum(FILE_OPS, { message: `ops: any of ${FILE_OPS.join(', ')}` })).max(FILE_OPS.length).default([]),
            path: z.string().min(1).max(MAX_GLOB_LENGTH),
          })
          .strict(),
      )
      .max(MAX_FILE_RULES)
      .optional(),
    file_events: z.array(z.string().min(1).max(MAX_GLOB_LENGTH)).max(MAX_EVENT_PATHS).optional(),
    s3_sync: z.array(s3SyncBody).max(8).optional(),
    hostname: z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i, 'a hostname of letters, digits and -').optional(),
    no_new_privileges: z.boolean().optional(),
    network: networkBody.optional(),
    snapshot: snapshotRef.optional(),
  })
  .strict()
  .refine((b) => !(b.template && b.image), { message: 'give template or image, not both', path: ['image'] })
  .refine((b) => !(b.snapshot && (b.template || b.image)), { message: 'give snapshot, or template or image, not both', path: ['snapshot'] });

export const listQuery = z
  .object({
    state: z.string().optional(),
    label: z.union([z.string(), z.array(z.string())]).optional(),
  })
  .strict();

export const idParams = z.object({ id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'sandbox ids are lowercase letters and digits') });
export const procParams = idParams.extend({ ref: z.string().min(1).max(128) });

export const stopBody = z.object({ timeout: duration('timeout').optional() }).strict().optional();
export const removeQuery = z.object({ force: z.enum(['true', 'false', '1', '0']).optional() }).strict();
export const timeoutBody = z.object({ timeout: duration('timeout') }).strict();
export const resourcesBody = z.object({ memory: size('memory', 32 * 1024 * 1024) }).strict();

const commandFields = {
  cmd: argv.min(1, 'give at least the program to run'),
  env: envMap.optional(),
  cwd: z.string().min(1).max(4096).refine((p) => !p.includes('\0'), 'must not contain NUL').optional(),
  user: userSpec.optional(),
  timeout: duration('timeout').optional(),
};

export const execBody = z
  .object({
    ...commandFields,
    stdin: z.string().max(64 * 1024 * 1024).optional(),
    stdin_encoding: z.enum(['utf8', 'base64']).optional(),
    stream: z.boolean().optional(),
  })
  .strict();

export const processBody = z
  .object({
    ...commandFields,
    tag: z.string().regex(/^[A-Za-z][A-Za-z0-9_.-]{0,62}$/, 'tags start with a letter').optional(),
    stdin: z.boolean().optional(),
    pty: z.object({ cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) }).strict().optional(),
  })
  .strict();

export const stdinBody = z.object({ data: z.string().max(16 * 1024 * 1024), encoding: z.enum(['utf8', 'base64']).optional() }).strict();
export const signalBody = z.object({ signal: z.enum(['SIGTERM', 'SIGKILL', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGSTOP', 'SIGCONT']) }).strict();
export const resizeBody = z.object({ cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) }).strict();

const filePath = z.string().min(1).max(4096);
export const pathQuery = z.object({ path: filePath, user: userSpec.optional() }).strict();
export const listFilesQuery = z.object({ path: filePath, depth: z.coerce.number().int().min(1).max(64).default(1), user: userSpec.optional() }).strict();
export const writeQuery = z
  .object({
    path: filePath,
    user: userSpec.optional(),
    mode: z.string().regex(/^[0-7]{3,4}$/, 'an octal mode like 644').optional(),
    append: z.enum(['true', 'false', '1', '0']).optional(),
    parents: z.enum(['true', 'false', '1', '0']).optional(),
  })
  .strict();
export const removeFileQuery = pathQuery.extend({ recursive: z.enum(['true', 'false', '1', '0']).optional() }).strict();
export const mkdirBody = z.object({ path: filePath, user: userSpec.optional() }).strict();
export const moveBody = z.object({ from: filePath, to: filePath, user: userSpec.optional() }).strict();

const idNumber = z.number().int().min(0).max(2 ** 31 - 1);
export const chmodBody = z.object({ path: filePath, mode: z.string().regex(/^[0-7]{3,4}$/, 'an octal mode like 644'), user: userSpec.optional() }).strict();
export const chownBody = z
  .object({ path: filePath, uid: idNumber.optional(), gid: idNumber.optional(), user: userSpec.optional() })
  .strict()
  .refine((b) => b.uid !== undefined || b.gid !== undefined, 'give uid, gid or both');
const xattrName = z.string().min(1).max(255).regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces, e.g. user.comment');
export const xattrQuery = pathQuery.extend({ name: xattrName }).strict();
export const xattrBody = z
  .object({ path: filePath, name: xattrName, value: z.string().max(90_000).regex(/^[A-Za-z0-9+/]*=*$/, 'base64'), user: userSpec.optional() })
  .strict();

export const truthy = (v: string | undefined) => v === 'true' || v === '1';

export const snapshotBody = z.object({ name: z.string().max(64).optional() }).strict();
export const snapshotParams = z.object({ ref: snapshotRef });
export const snapshotListQuery = z.object({ sandbox: z.string().max(128).optional(), name: z.string().max(256).optional() }).strict();
export const forkBody = z.object({ count: z.number().int().min(1).max(1000).default(1), timeout: duration('timeout').optional() }).strict();

export const syncBody = z
  .object({ direction: z.enum(['pull', 'push', 'both'], { message: 'direction: use pull, push or both' }).default('both') })
  .strict()
  .optional();

export const s3CredentialsBody = z
  .object({
    access_key_id: z.string().min(1).max(1024),
    secret_access_key: z.string().min(1).max(1024),
    session_token: z.string().min(1).max(8192).optional(),
  })
  .strict();

export const credentialsParams = z.object({ name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'a credentials name: letters, digits, _ . -, up to 63') });
