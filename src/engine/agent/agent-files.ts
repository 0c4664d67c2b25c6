// File operations through the sandbox's agent: one request each (a read or write streams its bytes
// on a channel under credit). Results are checked like everything from inside: an entry must be the
// path asked for (or below it, for a listing), or the agent is lying and the connection ends.
import { Readable } from 'node:stream';
import type { z } from 'zod';
import { CordonError } from '../../errors/registry.js';
import { MAX_LISTING_BYTES, type FileEntry } from '../files.js';
import { MAX_DATA, ProtocolError } from './frame-codec.js';
import type { AgentConnection } from './agent-connection.js';
import { AgentOpError, unavailable, type InboundChannel } from './connection-types.js';
import { INLINE_MAX, replies, type AgentEntry } from './messages.js';
import { MAX_LIST_ENTRIES, fileError, toFileEntry } from './agent-file-entries.js';

export interface AgentUser {
  uid: number;
  gid: number;
  groups: number[];
  /** ResolvedUser.accountsKey: while it stays the same, the agent need not check /etc/passwd and /etc/group for its names. */
  accounts?: string;
}

const TIMEOUT_MS = 30_000;
/**
 * Bytes of a file the agent may send beyond what the daemon acknowledged, and the credit for a file
 * being written: large enough that neither side waits for an ack round trip (a wake-up in and out of
 * gVisor) while the other has work, so a stream runs at the speed of the slower end.
 */
const READ_WINDOW = 2 * 1024 * 1024;
/** An older agent does not say its write credit in its hello; it gives 512 KiB. */
const DEFAULT_WRITE_WINDOW = 512 * 1024;
/** What one entry costs besides its path, as the agent counts it against the listing's byte bound. */
const LIST_ENTRY_OVERHEAD = 512;

/** The caller's data stream failed (client gone, upload limit). */
function sourceFailed(path: string, e: Error): CordonError {
  return e instanceof CordonError ? e : new CordonError('invalid_argument', `${path}: the data stream failed: ${e.message}`, { path });
}

/** An entry the agent returned must be the path asked about (the agent could name anything). */
function expectPath(conn: AgentConnection, e: AgentEntry, path: string): FileEntry {
  if (e.path !== path) {
    conn.fail(new ProtocolError(`asked about ${path}, answered about ${e.path}`));
    throw unavailable(`the sandbox's agent answered about another path than ${path}`);
  }
  return toFileEntry(e);
}

/** A file's bytes from the agent, acknowledged as they are read. */
class ChannelReadable extends Readable {
  private lastAck = 0;
  private received = 0;
  channel?: InboundChannel;
  cancel?: () => void;

  constructor() {
    super({ highWaterMark: MAX_DATA });
  }

  data(b: Buffer): void {
    this.received += b.length;
    this.push(b);
  }

  override _read(): void {
    if (!this.channel || this.received <= this.lastAck) return;
    if (this.received - this.lastAck >= READ_WINDOW / 4 || this.readableLength === 0) {
      this.lastAck = this.received;
      this.channel.ack(this.received);
    }
  }

  override _destroy(err: Error | null, cb: (e: Error | null) => void): void {
    this.cancel?.();
    cb(err);
  }

  fail(e: Error): void {
    this.destroy(e);
  }
}

export class AgentFiles {
  constructor(private readonly conn: () => AgentConnection) {}

  private async call<T extends keyof typeof replies>(path: string, kind: T, msg: Record<string, unknown>): Promise<z.infer<(typeof replies)[T]>> {
    try {
      return (await this.conn().request(msg, replies[kind], { timeoutMs: TIMEOUT_MS })) as z.infer<(typeof replies)[T]>;
    } catch (e) {
      throw fileError(path, e);
    }
  }

  async stat(path: string, user: AgentUser, follow = false): Promise<FileEntry> {
    const conn = this.conn();
    const r = await this.call(path, 'entry', { op: 'stat', path, user, follow });
    return expectPath(conn, r.entry, path);
  }

  async list(path: string, depth: number, user: AgentUser): Promise<FileEntry[]> {
    const conn = this.conn();
    const out: FileEntry[] = [];
    let bytes = 0;
    const prefix = path === '/' ? '/' : `${path}/`;
    const take = (m: unknown) => {
      const r = replies.entries.safeParse(m);
      if (!r.success) return conn.fail(new ProtocolError(`invalid listing: ${r.error.issues[0]?.path.join('.')} ${r.error.issues[0]?.message}`));
      for (const e of r.data.entries) {
        const rel = e.path.slice(prefix.length);
        if (!e.path.startsWith(prefix) || !rel || rel.split('/').length > depth) return conn.fail(new ProtocolError(`listing of ${path} named ${e.path}`));
        out.push(toFileEntry(e));
        bytes += e.path.length + LIST_ENTRY_OVERHEAD;
      }
      if (out.length > MAX_LIST_ENTRIES) conn.fail(new ProtocolError('a listing longer than asked for'));
      // The agent stops at the same byte bound (agent/files.go); past it, it is lying.
      if (bytes > MAX_LISTING_BYTES) conn.fail(new ProtocolError('a listing larger than the bound'));
    };
    try {
      const last = await conn.request({ op: 'list', path, depth, user, maxEntries: MAX_LIST_ENTRIES }, replies.entries, { timeoutMs: TIMEOUT_MS, onPartial: take });
      take(last);
    } catch (e) {
      if (e instanceof AgentOpError && e.errno === 'ENOTDIR') throw new CordonError('invalid_argument', `${path} is not a directory`, { path });
      throw fileError(path, e);
    }
    if (!conn.isOpen) throw unavailable(`the sandbox's agent sent an invalid listing of ${path}`);
    return out;
  }

  /**
   * Open a file (symlinks followed) and stream it; errors surface before the first byte. `content` is
   * the whole file when it came inside the reply (the stream then replays it).
   */
  async read(path: string, user: AgentUser): Promise<{ stream: Readable; size: number; content?: Buffer }> {
    const conn = this.conn();
    const stream = new ChannelReadable();
    // Until the stream is handed out nobody listens for its errors (destroying it then would be an
    // unhandled 'error' that ends the daemon): a failure before that fails the read instead.
    let handedOut = false;
    let early: Error | undefined;
    const failed = (e: Error) => (handedOut ? stream.fail(e) : (early ??= e));
    const ch = conn.openIn(READ_WINDOW, {
      data: (b) => stream.data(b),
      eof: () => stream.push(null),
      error: (e) => failed(fileError(path, new AgentOpError(e.errno, e.message))),
      lost: (reason) => failed(unavailable(`the sandbox's agent went away while ${path} was read (${reason})`)),
    });
    stream.channel = ch;
    let r;
    try {
      // A small file comes back inside the reply (an older agent ignores `inline` and streams it).
      r = await conn.request({ op: 'read', path, user, ch: ch.id, window: READ_WINDOW, frame: MAX_DATA, inline: INLINE_MAX }, replies.read, { timeoutMs: TIMEOUT_MS });
    } catch (e) {
      ch.close();
      throw fileError(path, e);
    }
    if (r.entry.type === 'dir') {
      ch.close();
      throw new CordonError('invalid_argument', `${path} is a directory; list it instead`, { path });
    }
    if (r.data !== undefined) {
      // The agent kept no channel open for it: nothing to cancel.
      ch.close();
      const content = Buffer.from(r.data, 'base64');
      if (content.length > INLINE_MAX) {
        conn.fail(new ProtocolError(`an inline read of ${content.length} bytes, more than the ${INLINE_MAX} asked for`));
        throw unavailable(`the sandbox's agent sent more of ${path} than asked for`);
      }
      const inline = new Readable({ read() {} });
      if (content.length) inline.push(content);
      inline.push(null);
      return { stream: inline, size: r.entry.size, content };
    }
    let cancelled = false;
    // Also once it ended: the agent keeps the channel (and the file open) until told.
    stream.cancel = () => {
      if (cancelled) return;
      cancelled = true;
      ch.close();
      if (conn.isOpen) conn.request({ op: 'cancel', ch: ch.id }, replies.empty, { timeoutMs: TIMEOUT_MS }).catch(() => {});
    };
    stream.once('end', () => stream.cancel?.());
    if (early) {
      stream.cancel();
      throw early;
    }
    handedOut = true;
    return { stream, size: r.entry.size };
  }

  /**
   * Write (or append) a stream, creating parents unless told not to; with `ownParents` the agent
   * makes what the user may not create as root and hands it over. The reply comes once it is all on disk.
   */
  async write(path: string, data: Readable | Buffer, user: AgentUser, opts: { mode?: number; append?: boolean; parents?: boolean; ownParents?: boolean }): Promise<FileEntry> {
    const conn = this.conn();
    const msg = { op: 'write', path, user, append: !!opts.append, parents: opts.parents !== false, ownParents: !!opts.ownParents, ...(opts.mode !== undefined ? { mode: opts.mode & 0o7777 } : {}) };
    // Content up to the agent's inline bound goes inside the request; a stream is read ahead that far
    // to find out. An agent whose hello offers no inline bound (an older one) gets every write on a channel.
    const inlineMax = Math.min(conn.helloInfo?.inline ?? 0, INLINE_MAX);
    const head: Buffer[] = [];
    let rest: AsyncIterableIterator<unknown> | undefined;
    if (inlineMax > 0 && Buffer.isBuffer(data) && data.length <= inlineMax) return this.writeInline(conn, path, msg, data);
    if (inlineMax > 0 && !Buffer.isBuffer(data)) {
      // destroyOnReturn false: an early answer must not destroy the source (see the pump below).
      rest = data.iterator({ destroyOnReturn: false });
      let n = 0;
      try {
        while (n <= inlineMax) {
          const r = await rest.next();
          if (r.done) return this.writeInline(conn, path, msg, Buffer.concat(head));
          const b = typeof r.value === 'string' ? Buffer.from(r.value) : (r.value as Buffer);
          head.push(b);
          n += b.length;
        }
      } catch (e) {
        throw sourceFailed(path, e as Error);
      }
    }
    const window = conn.helloInfo?.writeWindow ?? DEFAULT_WRITE_WINDOW;
    const out = conn.openOut(window);
    let refresh = () => {};
    const reply = conn.request({ ...msg, ch: out.id }, replies.entry, { timeoutMs: TIMEOUT_MS, progress: (r) => (refresh = r) });
    let settled = false;
    const answered = reply.then(
      () => void (settled = true),
      () => void (settled = true),
    );
    const cancel = () => conn.isOpen && conn.request({ op: 'cancel', ch: out.id }, replies.empty, { timeoutMs: TIMEOUT_MS }).catch(() => {});
    const pump = async () => {
      const send = async (chunk: Buffer) => {
        if (settled) throw new Error('answered');
        await out.write(chunk);
        refresh();
      };
      if (Buffer.isBuffer(data)) {
        for (let off = 0; off < data.length; off += window) await send(data.subarray(off, off + window));
      } else {
        for (const chunk of head) await send(chunk);
        // An early answer (disk full, refused path) must not destroy the source: for an HTTP upload that
        // would reset the client's connection under the error answer. The API drains what is left.
        for await (const chunk of rest ?? data.iterator({ destroyOnReturn: false })) await send(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
      }
      out.end();
    };
    let sourceError: Error | undefined;
    await Promise.race([
      pump().catch((e: Error) => {
        if (settled) return;
        // The source failed (client gone, upload limit): the agent stops and keeps what it wrote.
        sourceError = e;
        out.close();
        cancel();
      }),
      answered,
    ]);
    if (sourceError) {
      reply.catch(() => {});
      throw sourceFailed(path, sourceError);
    }
    try {
      const r = await reply;
      return expectPath(conn, r.entry, path);
    } catch (e) {
      throw fileError(path, e);
    } finally {
      out.close();
    }
  }

  /** A write whose whole content goes in the request: one frame each way. */
  private async writeInline(conn: AgentConnection, path: string, msg: Record<string, unknown>, content: Buffer): Promise<FileEntry> {
    try {
      const r = await conn.request({ ...msg, ch: 0, data: content.toString('base64') }, replies.entry, { timeoutMs: TIMEOUT_MS });
      return expectPath(conn, r.entry, path);
    } catch (e) {
      throw fileError(path, e);
    }
  }

  async mkdir(path: string, user: AgentUser, ownParents: boolean): Promise<FileEntry> {
    const conn = this.conn();
    const r = await this.call(path, 'entry', { op: 'mkdir', path, user, ownParents });
    return expectPath(conn, r.entry, path);
  }

  async move(from: string, to: string, user: AgentUser): Promise<FileEntry> {
    const conn = this.conn();
    try {
      const r = await conn.request({ op: 'move', path: from, to, user }, replies.entry, { timeoutMs: TIMEOUT_MS });
      return expectPath(conn, r.entry, to);
    } catch (e) {
      throw fileError(from, e);
    }
  }

  async remove(path: string, user: AgentUser, recursive: boolean, missingOk: boolean): Promise<void> {
    await this.call(path, 'empty', { op: 'remove', path, user, recursive, missingOk });
  }

  async chmod(path: string, mode: number, user: AgentUser): Promise<FileEntry> {
    const conn = this.conn();
    const r = await this.call(path, 'entry', { op: 'chmod', path, mode: mode & 0o7777, user });
    return expectPath(conn, r.entry, path);
  }

  async chown(path: string, owner: { uid?: number; gid?: number }, user: AgentUser): Promise<FileEntry> {
    const conn = this.conn();
    const r = await this.call(path, 'entry', { op: 'chown', path, ...(owner.uid !== undefined ? { uid: owner.uid } : {}), ...(owner.gid !== undefined ? { gid: owner.gid } : {}), user });
    return expectPath(conn, r.entry, path);
  }

  async listXattrs(path: string, user: AgentUser): Promise<string[]> {
    const r = await this.call(path, 'xattrNames', { op: 'xattr', action: 'list', path, user });
    return r.names ?? [];
  }

  async getXattr(path: string, name: string, user: AgentUser): Promise<Buffer> {
    const r = await this.call(path, 'xattrValue', { op: 'xattr', action: 'get', path, name, user });
    return Buffer.from(r.value ?? '', 'base64');
  }

  async setXattr(path: string, name: string, value: Buffer, user: AgentUser): Promise<void> {
    await this.call(path, 'empty', { op: 'xattr', action: 'set', path, name, value: value.toString('base64'), user });
  }

  async removeXattr(path: string, name: string, user: AgentUser): Promise<void> {
    await this.call(path, 'empty', { op: 'xattr', action: 'remove', path, name, user });
  }
}
