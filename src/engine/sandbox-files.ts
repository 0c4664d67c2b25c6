// A sandbox's file operations: through its agent when it is connected, else through busybox helpers
// started with the runtime's exec (the fallback, also for sandboxes without an agent).
import type { Readable } from 'node:stream';
import { CordonError } from '../errors/registry.js';
import { AgentFiles, type AgentUser } from './agent/agent-files.js';
import type { AgentConnection } from './agent/agent-connection.js';
import type { FileEntry, FileService } from './files.js';

export interface WriteOptions {
  user?: string;
  mode?: number;
  append?: boolean;
  parents?: boolean;
  ownParents?: boolean;
}

export class SandboxFiles {
  constructor(
    private readonly exec: FileService,
    private readonly agentConn: () => AgentConnection | undefined,
    private readonly userOf: (user: string | undefined) => Promise<AgentUser>,
  ) {}

  private agent(): AgentFiles | undefined {
    const conn = this.agentConn();
    return conn ? new AgentFiles(() => conn) : undefined;
  }

  async stat(path: string, user?: string, follow = false): Promise<FileEntry> {
    const a = this.agent();
    return a ? a.stat(path, await this.userOf(user), follow) : this.exec.stat(path, user, follow);
  }

  async exists(path: string, user?: string): Promise<boolean> {
    try {
      await this.stat(path, user);
      return true;
    } catch (e) {
      if (e instanceof CordonError && e.code === 'not_found') return false;
      throw e;
    }
  }

  async list(path: string, depth = 1, user?: string): Promise<FileEntry[]> {
    if (!Number.isInteger(depth) || depth < 1 || depth > 64) throw new CordonError('invalid_argument', 'depth: must be an integer from 1 to 64', { field: 'depth' });
    const a = this.agent();
    return a ? a.list(path, depth, await this.userOf(user)) : this.exec.list(path, depth, user);
  }

  /** `content`: the whole file, when the agent sent it at once (small files): no stream needed. */
  async read(path: string, user?: string): Promise<{ stream: Readable; size: number; content?: Buffer }> {
    const a = this.agent();
    return a ? a.read(path, await this.userOf(user)) : this.exec.read(path, user);
  }

  async readAll(path: string, user?: string): Promise<Buffer> {
    const { stream } = await this.read(path, user);
    const parts: Buffer[] = [];
    for await (const c of stream) parts.push(c as Buffer);
    return Buffer.concat(parts);
  }

  async write(path: string, data: Readable | Buffer, opts: WriteOptions = {}): Promise<FileEntry> {
    const a = this.agent();
    return a ? a.write(path, data, await this.userOf(opts.user), opts) : this.exec.write(path, data, opts);
  }

  async mkdir(path: string, user?: string, opts: { ownParents?: boolean } = {}): Promise<FileEntry> {
    const a = this.agent();
    return a ? a.mkdir(path, await this.userOf(user), !!opts.ownParents) : this.exec.mkdir(path, user, opts);
  }

  async move(from: string, to: string, user?: string): Promise<FileEntry> {
    const a = this.agent();
    return a ? a.move(from, to, await this.userOf(user)) : this.exec.move(from, to, user);
  }

  async remove(path: string, user?: string, recursive = true, missingOk = false): Promise<void> {
    if (path === '/') throw new CordonError('invalid_argument', 'path: refusing to remove /', { field: 'path' });
    const a = this.agent();
    return a ? a.remove(path, await this.userOf(user), recursive, missingOk) : this.exec.remove(path, user, recursive, missingOk);
  }

  async chmod(path: string, mode: number, user?: string): Promise<FileEntry> {
    const a = this.agent();
    return a ? a.chmod(path, mode, await this.userOf(user)) : this.exec.chmod(path, mode, user);
  }

  async chown(path: string, owner: { uid?: number; gid?: number }, user?: string): Promise<FileEntry> {
    const a = this.agent();
    return a ? a.chown(path, owner, await this.userOf(user)) : this.exec.chown(path, owner, user);
  }

  private needAgent(what: string): AgentFiles {
    const a = this.agent();
    if (!a) throw new CordonError('unavailable', `${what} needs the sandbox's agent, which is not connected; retry in a moment`);
    return a;
  }

  async listXattrs(path: string, user?: string): Promise<string[]> {
    return this.needAgent('listing extended attributes').listXattrs(path, await this.userOf(user));
  }

  async getXattr(path: string, name: string, user?: string): Promise<Buffer> {
    return this.needAgent('reading an extended attribute').getXattr(path, name, await this.userOf(user));
  }

  async setXattr(path: string, name: string, value: Buffer, user?: string): Promise<void> {
    return this.needAgent('setting an extended attribute').setXattr(path, name, value, await this.userOf(user));
  }

  async removeXattr(path: string, name: string, user?: string): Promise<void> {
    return this.needAgent('removing an extended attribute').removeXattr(path, name, await this.userOf(user));
  }
}
