import type { Readable } from 'node:stream';
import type { Http } from './http.js';

const enc = encodeURIComponent;

export interface VolumeInfo {
  id: string;
  name: string;
  size: number;
  used: number | null;
  labels: Record<string, string>;
  created_at: string;
  /** Sandboxes whose spec mounts it. */
  mounted_by: string[];
}

export interface VolumeEntry {
  name: string;
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  uid: number;
  gid: number;
  modified_at: string;
  symlink_target: string | null;
}

/** Files of one volume, from outside any sandbox (links in it are never followed, only regular files read). */
export class VolumeFiles {
  constructor(private readonly http: Http, private readonly ref: string) {}
  private p(rest = '') {
    return `/v1/volumes/${enc(this.ref)}/files${rest}`;
  }
  async readStream(path: string): Promise<Readable> {
    return (await this.http.raw('GET', this.p(), { query: { path } })).body;
  }
  async read(path: string): Promise<Buffer> {
    const res = await this.http.raw('GET', this.p(), { query: { path } });
    return Buffer.from(await res.body.arrayBuffer());
  }
  async readText(path: string): Promise<string> {
    return (await this.read(path)).toString('utf8');
  }
  write(path: string, data: string | Buffer | Readable, opts: { mode?: number; uid?: number; gid?: number } = {}): Promise<VolumeEntry> {
    return this.http
      .raw('PUT', this.p(), {
        body: typeof data === 'string' ? Buffer.from(data) : data,
        contentType: 'application/octet-stream',
        query: { path, mode: opts.mode?.toString(8), uid: opts.uid, gid: opts.gid },
      })
      .then((r) => r.body.json() as Promise<VolumeEntry>);
  }
  stat(path: string) {
    return this.http.json<VolumeEntry>('GET', this.p('/stat'), undefined, { path });
  }
  list(path = '/', opts: { depth?: number } = {}) {
    return this.http.json<VolumeEntry[]>('GET', this.p('/list'), undefined, { path, depth: opts.depth });
  }
  mkdir(path: string, opts: { mode?: number; uid?: number; gid?: number } = {}) {
    return this.http.json<VolumeEntry>('POST', this.p('/mkdir'), { path, mode: opts.mode?.toString(8).padStart(3, '0'), uid: opts.uid, gid: opts.gid });
  }
  setMetadata(path: string, meta: { mode?: number; uid?: number; gid?: number }) {
    return this.http.json<VolumeEntry>('PATCH', this.p('/metadata'), { path, mode: meta.mode?.toString(8).padStart(3, '0'), uid: meta.uid, gid: meta.gid });
  }
  remove(path: string) {
    return this.http.json<void>('DELETE', this.p(), undefined, { path });
  }
}

/** Named volumes: they outlive sandboxes and are mounted with `volumes: [{name, path, read_only}]` at create. */
export class Volumes {
  constructor(private readonly http: Http) {}
  create(name: string, opts: { size?: string | number; labels?: Record<string, string> } = {}) {
    return this.http.json<VolumeInfo>('POST', '/v1/volumes', { name, ...opts });
  }
  list() {
    return this.http.json<VolumeInfo[]>('GET', '/v1/volumes');
  }
  inspect(ref: string) {
    return this.http.json<VolumeInfo>('GET', `/v1/volumes/${enc(ref)}`);
  }
  remove(ref: string, opts: { force?: boolean } = {}) {
    return this.http.json<void>('DELETE', `/v1/volumes/${enc(ref)}`, undefined, { force: opts.force });
  }
  files(ref: string): VolumeFiles {
    return new VolumeFiles(this.http, ref);
  }
}
