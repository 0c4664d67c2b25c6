import type { Readable } from 'node:stream';
import { Http, type ClientOptions } from './http.js';
import { ProcessSocket, readSse } from './process-stream.js';
import { Images } from './images.js';
import { Templates } from './templates.js';
import { Volumes } from './volumes.js';
import { openInterceptor, type InterceptHandler, type Interceptor } from './callbacks.js';
import type { ForkResult, SnapshotInfo } from './types.js';
import type { CreateOptions, ExecOptions, ExecResult, FileInfo, ProcessEvent, ProcessInfo, SandboxEvent, SandboxInfo, SandboxState, SandboxStats } from './types.js';

const enc = encodeURIComponent;

export interface PortForwardInfo {
  address: string;
  local_port: number;
  remote_port: number;
}

export interface StartProcessOptions extends Omit<ExecOptions, 'stdin'> {
  tag?: string;
  stdin?: boolean;
  pty?: { cols: number; rows: number };
}

/** Files of one sandbox. Paths are inside the sandbox; nothing can reach the host's files. */
export class SandboxFiles {
  constructor(private readonly http: Http, private readonly id: string) {}
  private p(rest: string) {
    return `/v1/sandboxes/${enc(this.id)}/files${rest}`;
  }
  /** The file as a stream; destroy it (or abort `signal`) to stop the download early. */
  async readStream(path: string, opts: { user?: string; signal?: AbortSignal } = {}): Promise<Readable> {
    const res = await this.http.raw('GET', this.p('/content'), { query: { path, user: opts.user }, signal: opts.signal });
    return res.body;
  }
  async read(path: string, opts: { user?: string } = {}): Promise<Buffer> {
    const res = await this.http.raw('GET', this.p('/content'), { query: { path, user: opts.user } });
    return Buffer.from(await res.body.arrayBuffer());
  }
  async readText(path: string, opts: { user?: string } = {}): Promise<string> {
    return (await this.read(path, opts)).toString('utf8');
  }
  write(path: string, data: string | Buffer | Readable, opts: { user?: string; mode?: number; append?: boolean; parents?: boolean } = {}): Promise<FileInfo> {
    return this.http
      .raw('PUT', this.p('/content'), {
        body: typeof data === 'string' ? Buffer.from(data) : data,
        contentType: 'application/octet-stream',
        query: { path, user: opts.user, mode: opts.mode?.toString(8), append: opts.append, parents: opts.parents },
      })
      .then((r) => r.body.json() as Promise<FileInfo>);
  }
  append(path: string, data: string | Buffer, opts: { user?: string } = {}) {
    return this.write(path, data, { ...opts, append: true });
  }
  stat(path: string, opts: { user?: string } = {}) {
    return this.http.json<FileInfo>('GET', this.p('/stat'), undefined, { path, user: opts.user });
  }
  async exists(path: string, opts: { user?: string } = {}): Promise<boolean> {
    try {
      await this.stat(path, opts);
      return true;
    } catch (e) {
      if ((e as { code?: string }).code === 'not_found') return false;
      throw e;
    }
  }
  list(path: string, opts: { depth?: number; user?: string } = {}) {
    return this.http.json<FileInfo[]>('GET', this.p('/list'), undefined, { path, depth: opts.depth, user: opts.user });
  }
  mkdir(path: string, opts: { user?: string } = {}) {
    return this.http.json<FileInfo>('POST', this.p('/mkdir'), { path, user: opts.user });
  }
  move(from: string, to: string, opts: { user?: string } = {}) {
    return this.http.json<FileInfo>('POST', this.p('/move'), { from, to, user: opts.user });
  }
  remove(path: string, opts: { user?: string; recursive?: boolean } = {}) {
    return this.http.json<void>('DELETE', this.p(''), undefined, { path, user: opts.user, recursive: opts.recursive });
  }
  chmod(path: string, mode: number, opts: { user?: string } = {}) {
    return this.http.json<FileInfo>('POST', this.p('/chmod'), { path, mode: (mode & 0o7777).toString(8).padStart(3, '0'), user: opts.user });
  }
  chown(path: string, owner: { uid?: number; gid?: number }, opts: { user?: string } = {}) {
    return this.http.json<FileInfo>('POST', this.p('/chown'), { path, ...owner, user: opts.user });
  }
  async listXattrs(path: string, opts: { user?: string } = {}): Promise<string[]> {
    return (await this.http.json<{ names: string[] }>('GET', this.p('/xattrs'), undefined, { path, user: opts.user })).names;
  }
  async getXattr(path: string, name: string, opts: { user?: string } = {}): Promise<Buffer> {
    return Buffer.from((await this.http.json<{ value: string }>('GET', this.p('/xattr'), undefined, { path, name, user: opts.user })).value, 'base64');
  }
  setXattr(path: string, name: string, value: string | Buffer, opts: { user?: string } = {}) {
    return this.http.json<void>('PUT', this.p('/xattr'), { path, name, value: Buffer.from(value).toString('base64'), user: opts.user });
  }
  removeXattr(path: string, name: string, opts: { user?: string } = {}) {
    return this.http.json<void>('DELETE', this.p('/xattr'), undefined, { path, name, user: opts.user });
  }
}

/** Handle on one sandbox. */
export class Sandbox {
  readonly files: SandboxFiles;
  constructor(private readonly http: Http, public info: SandboxInfo) {
    this.files = new SandboxFiles(http, info.id);
  }
  get id(): string {
    return this.info.id;
  }
  private p(rest = '') {
    return `/v1/sandboxes/${enc(this.id)}${rest}`;
  }
  async refresh(): Promise<SandboxInfo> {
    return (this.info = await this.http.json<SandboxInfo>('GET', this.p()));
  }
  exec(cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const stdin = opts.stdin === undefined ? undefined : Buffer.from(opts.stdin).toString('base64');
    return this.http.json<ExecResult>('POST', this.p('/exec'), { cmd, env: opts.env, cwd: opts.cwd, user: opts.user, timeout: opts.timeout, stdin, stdin_encoding: stdin ? 'base64' : undefined });
  }
  /** Run and receive output as it happens (Server-Sent Events). */
  async *execStream(cmd: string[], opts: ExecOptions & { signal?: AbortSignal } = {}): AsyncGenerator<ProcessEvent> {
    const stdin = opts.stdin === undefined ? undefined : Buffer.from(opts.stdin).toString('base64');
    const res = await this.http.raw('POST', this.p('/exec'), {
      body: JSON.stringify({ cmd, env: opts.env, cwd: opts.cwd, user: opts.user, timeout: opts.timeout, stdin, stdin_encoding: stdin ? 'base64' : undefined, stream: true }),
      signal: opts.signal,
    });
    yield* readSse(res.body);
  }
  startProcess(cmd: string[], opts: StartProcessOptions = {}): Promise<ProcessInfo> {
    return this.http.json<ProcessInfo>('POST', this.p('/processes'), { cmd, env: opts.env, cwd: opts.cwd, user: opts.user, timeout: opts.timeout, tag: opts.tag, stdin: opts.stdin, pty: opts.pty });
  }
  processes(): Promise<ProcessInfo[]> {
    return this.http.json<ProcessInfo[]>('GET', this.p('/processes'));
  }
  process(ref: string | number): Promise<ProcessInfo> {
    return this.http.json<ProcessInfo>('GET', this.p(`/processes/${enc(String(ref))}`));
  }
  /** Reconnect to a process's output by pid or tag; buffered output is replayed first. Abort `signal` to stop following. */
  async *events(ref: string | number, opts: { replay?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<ProcessEvent> {
    const res = await this.http.raw('GET', this.p(`/processes/${enc(String(ref))}/events`), { query: { replay: opts.replay === false ? 'false' : undefined }, signal: opts.signal });
    yield* readSse(res.body);
  }
  sendStdin(ref: string | number, data: string | Buffer) {
    return this.http.json<void>('POST', this.p(`/processes/${enc(String(ref))}/stdin`), { data: Buffer.from(data).toString('base64'), encoding: 'base64' });
  }
  closeStdin(ref: string | number) {
    return this.http.json<void>('POST', this.p(`/processes/${enc(String(ref))}/close-stdin`));
  }
  signal(ref: string | number, signal: string) {
    return this.http.json<void>('POST', this.p(`/processes/${enc(String(ref))}/signal`), { signal });
  }
  kill(ref: string | number) {
    return this.http.json<void>('DELETE', this.p(`/processes/${enc(String(ref))}`));
  }
  resize(ref: string | number, cols: number, rows: number) {
    return this.http.json<void>('POST', this.p(`/processes/${enc(String(ref))}/resize`), { cols, rows });
  }
  /** Start a process over a WebSocket (stdin open, optional PTY) and follow it. */
  openProcess(cmd: string[], opts: StartProcessOptions, onEvent: (ev: ProcessEvent) => void) {
    return ProcessSocket.open(this.http, this.p('/exec/ws'), onEvent, { cmd, env: opts.env, cwd: opts.cwd, user: opts.user, tag: opts.tag, stdin: opts.stdin ?? true, pty: opts.pty, timeout: opts.timeout });
  }
  attach(ref: string | number, onEvent: (ev: ProcessEvent) => void) {
    return ProcessSocket.open(this.http, this.p(`/processes/${enc(String(ref))}/attach`), onEvent);
  }
  stats() {
    return this.http.json<SandboxStats>('GET', this.p('/stats'));
  }
  events_() {
    return this.http.json<SandboxEvent[]>('GET', this.p('/events'));
  }
  /** Follow the sandbox's events as they happen (optionally only one type, e.g. "network"). */
  async *followEvents(opts: { type?: string; after?: number } = {}): AsyncGenerator<SandboxEvent> {
    const res = await this.http.raw('GET', this.p('/events/stream'), { query: { type: opts.type, after: opts.after } });
    let buf = '';
    for await (const chunk of res.body) {
      buf += chunk.toString();
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const frame = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = frame.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
        if (data) yield JSON.parse(data) as SandboxEvent;
      }
    }
  }
  /** The sandbox's network mode and rules (no secret values). */
  network() {
    return this.http.json<Record<string, unknown>>('GET', this.p('/network'));
  }
  /** Change allow/deny entries while it runs: `add` to the allow-list, `deny` to the deny-list, `delete` from either. */
  changeNetwork(change: { add?: string[]; deny?: string[]; delete?: string[] }) {
    return this.http.json<Record<string, unknown>>('POST', this.p('/network/allow-list'), change);
  }
  /**
   * Answer the sandbox's interception rules with action `callback` from this process: `handler` gets
   * each matching request (method, host, path, headers; for phase after also status and response
   * headers) and returns allow / block / mutate. Without an answer within the rule's timeout_ms (or
   * `timeoutMs` here, if shorter) the rule's on_timeout action applies.
   */
  onRequest(handler: InterceptHandler, opts: { timeoutMs?: number } = {}): Promise<Interceptor> {
    return openInterceptor(this.http, this.p('/network/callbacks'), handler, opts);
  }
  /** Port forwards (ports in): host `address:local_port` to `remote_port` in the sandbox. */
  ports() {
    return this.http.json<PortForwardInfo[]>('GET', this.p('/ports'));
  }
  /** Forward a host port to a sandbox port while it runs: `"8080:80"`, `"80"` or `{ local?, remote, host? }` (127.0.0.1 by default). */
  addPort(spec: string | number | { local?: number; remote: number; host?: string }) {
    let body = spec;
    if (typeof spec !== 'object') {
      const parts = String(spec).split(':');
      body = parts.length === 2 ? { local: Number(parts[0]), remote: Number(parts[1]) } : { remote: Number(parts[0]) };
    }
    return this.http.json<PortForwardInfo>('POST', this.p('/ports'), body);
  }
  /** Remove the forward on host port LOCAL; the port closes at once. */
  removePort(local: number) {
    return this.http.json<PortForwardInfo>('DELETE', this.p(`/ports/${local}`));
  }
  async stop(timeout?: string | number) {
    return (this.info = await this.http.json<SandboxInfo>('POST', this.p('/stop'), timeout === undefined ? {} : { timeout }));
  }
  async start() {
    return (this.info = await this.http.json<SandboxInfo>('POST', this.p('/start')));
  }
  async pause() {
    return (this.info = await this.http.json<SandboxInfo>('POST', this.p('/pause')));
  }
  async resume() {
    return (this.info = await this.http.json<SandboxInfo>('POST', this.p('/resume')));
  }
  async setTimeout(timeout: string | number) {
    return (this.info = await this.http.json<SandboxInfo>('POST', this.p('/timeout'), { timeout }));
  }
  async setMemoryLimit(memory: string | number) {
    return (this.info = await this.http.json<SandboxInfo>('PATCH', this.p('/resources'), { memory }));
  }
  remove(opts: { force?: boolean } = { force: true }) {
    return this.http.json<void>('DELETE', this.p(), undefined, { force: opts.force });
  }
  /** Snapshot it as it is now (it keeps running). */
  snapshot(opts: { name?: string } = {}) {
    return this.http.json<SnapshotInfo>('POST', this.p('/snapshots'), opts);
  }
  /** `count` new sandboxes from its current state; one entry per fork (a sandbox or an error). */
  fork(opts: { count?: number; timeout?: string | number } = {}) {
    return this.http.json<ForkResult[]>('POST', this.p('/fork'), opts);
  }
}

/** Client for a cordon daemon. */
export class Cordon {
  readonly http: Http;
  readonly images: Images;
  readonly templates: Templates;
  readonly volumes: Volumes;
  constructor(opts: ClientOptions = {}) {
    this.http = new Http(opts);
    this.images = new Images(this.http);
    this.templates = new Templates(this.http);
    this.volumes = new Volumes(this.http);
  }
  health() {
    return this.http.json<{ status: string; reason: string | null; runtimes: Record<string, string>; version: string }>('GET', '/v1/health');
  }
  info() {
    return this.http.json<Record<string, unknown>>('GET', '/v1/info');
  }
  async create(opts: CreateOptions = {}): Promise<Sandbox> {
    return new Sandbox(this.http, await this.http.json<SandboxInfo>('POST', '/v1/sandboxes', opts));
  }
  async get(id: string): Promise<Sandbox> {
    return new Sandbox(this.http, await this.http.json<SandboxInfo>('GET', `/v1/sandboxes/${enc(id)}`));
  }
  list(filter: { state?: SandboxState[]; labels?: Record<string, string> } = {}): Promise<SandboxInfo[]> {
    const qs = new URLSearchParams();
    if (filter.state?.length) qs.set('state', filter.state.join(','));
    for (const [k, v] of Object.entries(filter.labels ?? {})) qs.append('label', `${k}=${v}`);
    return this.http.json<SandboxInfo[]>('GET', `/v1/sandboxes${qs.size ? `?${qs}` : ''}`);
  }
  remove(id: string, opts: { force?: boolean } = {}) {
    return this.http.json<void>('DELETE', `/v1/sandboxes/${enc(id)}`, undefined, { force: opts.force });
  }
  snapshots(filter: { sandbox?: string; name?: string } = {}) {
    return this.http.json<SnapshotInfo[]>('GET', '/v1/snapshots', undefined, filter);
  }
  snapshot(ref: string) {
    return this.http.json<SnapshotInfo>('GET', `/v1/snapshots/${enc(ref)}`);
  }
  removeSnapshot(ref: string) {
    return this.http.json<void>('DELETE', `/v1/snapshots/${enc(ref)}`);
  }
  sandbox(id: string, info?: SandboxInfo): Sandbox {
    return new Sandbox(this.http, info ?? ({ id } as SandboxInfo));
  }
  close() {
    return this.http.close();
  }
}
