// What the agent may send, as zod schemas: every message from inside a sandbox is checked here
// before the daemon acts on it. Sizes are bounded; a message that fails is a protocol error.
import { posix } from 'node:path';
import { z } from 'zod';

/**
 * Files of at most this many bytes travel inside the request (a write) or the reply (a read) instead
 * of on a channel: one frame each way, no channel, acknowledgement, end-of-stream or cancel.
 */
export const INLINE_MAX = 64 * 1024;

const u32 = z.number().int().min(0).max(2 ** 32 - 1);
const offset = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
export const PROC_ID = /^p-\d{1,9}$/;
const procId = z.string().regex(PROC_ID);
const sandboxPath = z.string().min(1).max(4096).refine((p) => p.startsWith('/') && !p.includes('\0') && posix.normalize(p) === p, 'an absolute, normalized path');

export const agentError = z.object({ errno: z.string().regex(/^E[A-Z0-9]{1,15}$/), message: z.string().max(4096) });
export type AgentError = z.infer<typeof agentError>;

const exitInfo = z.object({ code: z.number().int().min(0).max(255), signal: z.string().max(16).regex(/^(SIG[A-Z0-9]{1,12})?$/) });

export const helloProcess = z.object({
  proc: procId,
  pid: u32,
  meta: z.unknown(),
  out: z.array(z.object({ base: offset, written: offset, eof: z.boolean() })).min(1).max(2),
  stdinOpen: z.boolean(),
  tty: z.boolean(),
  exit: exitInfo.optional(),
});
export type HelloProcess = z.infer<typeof helloProcess>;

export const hello = z.object({
  op: z.literal('hello'),
  version: z.literal(1),
  boot: z.string().regex(/^[0-9a-f]{1,64}$/),
  pid: u32,
  processes: z.array(helloProcess).max(1024),
  /** The credit the agent gives a file being written (absent: an older agent, 512 KiB). */
  writeWindow: z.number().int().min(64 * 1024).max(16 * 1024 * 1024).optional(),
  /** The largest file content the agent takes inline in a write request (absent: an older agent, none). */
  inline: z.number().int().min(0).max(16 * 1024 * 1024).optional(),
});
export type Hello = z.infer<typeof hello>;

export const exitMessage = exitInfo.extend({ op: z.literal('exit'), proc: procId });

const WATCH_TYPES = ['create', 'write', 'remove', 'rename', 'chmod', 'overflow', 'gone'] as const;
const relativeName = z.string().max(4096).refine((n) => n === '' || (!n.startsWith('/') && !n.includes('\0') && posix.normalize(n) === n && !n.startsWith('..')), 'a relative name inside the watched directory');
export const watchEvents = z.object({
  op: z.literal('wev'),
  ch: u32,
  events: z.array(z.object({ name: relativeName, type: z.enum(WATCH_TYPES), isDir: z.boolean() })).min(1).max(256),
});
export const channelError = z.object({ op: z.literal('chErr'), ch: u32, error: agentError });

export const entry = z.object({
  path: sandboxPath,
  type: z.enum(['file', 'dir', 'symlink', 'other']),
  size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  mode: u32,
  uid: u32,
  gid: u32,
  owner: z.string().max(256),
  group: z.string().max(256),
  mtime: z.number().int().min(-(2 ** 40)).max(2 ** 40),
  /** Nanoseconds within the second (absent from agents older than the field). */
  mtimeNs: z.number().int().min(0).max(999_999_999).optional(),
  target: z.string().max(4096).optional(),
  resolved: z.object({ path: sandboxPath, mode: u32 }).optional(),
});
export type AgentEntry = z.infer<typeof entry>;

export const replies = {
  empty: z.object({}),
  start: z.union([
    z.object({ pid: z.number().int().min(1).max(2 ** 31 - 1) }),
    z.object({ fail: z.object({ code: z.number().int().min(1).max(255), message: z.string().max(4096) }) }),
  ]),
  attach: z.object({ starts: z.array(offset).min(1).max(2), stdin: z.boolean() }),
  entry: z.object({ entry }),
  /** A read: the entry, and the whole content (base64) when the file was small enough to come inline. */
  read: z.object({ entry, data: z.string().max(4 * Math.ceil(INLINE_MAX / 3)).optional() }),
  entries: z.object({ entries: z.array(entry).max(1000) }),
  xattrNames: z.object({ names: z.array(z.string().max(255)).max(4096).optional().nullable() }),
  xattrValue: z.object({ value: z.string().max(128 * 1024).optional().nullable() }),
};
