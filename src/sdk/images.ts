import type { Readable } from 'node:stream';
import { ndjsonResult } from './ndjson-result.js';
import type { Http } from './http.js';

export interface ImageInfo {
  name: string;
  id: string;
  digest: string;
  size: number;
  source: 'pull' | 'import';
  architecture: string | null;
  os: string | null;
  created: string | null;
  stored_at: string;
  config: { env: string[]; workdir?: string; user?: string; entrypoint?: string[]; cmd?: string[] };
  layers: { digest: string; diff_id: string; size: number; media_type: string | null }[];
}

export type PullProgress =
  | { type: 'status'; message: string }
  | { type: 'layer'; digest: string; status: 'waiting' | 'downloading' | 'exists' | 'done'; current: number; total?: number }
  | { type: 'total'; current: number; total: number; layers: number; layersDone: number };

export interface PullOptions {
  username?: string;
  password?: string;
  token?: string;
  onProgress?: (ev: PullProgress) => void;
}

const enc = (ref: string) => ref.split('/').map(encodeURIComponent).join('/');

/** The daemon's OCI image store. */
export class Images {
  constructor(private readonly http: Http) {}

  list(): Promise<ImageInfo[]> {
    return this.http.json<ImageInfo[]>('GET', '/v1/images');
  }
  get(ref: string): Promise<ImageInfo> {
    return this.http.json<ImageInfo>('GET', `/v1/images/${enc(ref)}`);
  }
  remove(ref: string, opts: { force?: boolean } = {}): Promise<{ removed: string[] }> {
    return this.http.json('DELETE', `/v1/images/${enc(ref)}`, undefined, { force: opts.force });
  }
  prune(): Promise<{ removed_layers: string[]; kept_layers: number }> {
    return this.http.json('POST', '/v1/images/prune');
  }

  /** Pull, following progress as it streams; resolves with the stored image or throws the daemon's error. */
  async pull(image: string, opts: PullOptions = {}): Promise<ImageInfo> {
    const res = await this.http.raw('POST', '/v1/images/pull', { body: JSON.stringify({ image, username: opts.username, password: opts.password, token: opts.token, stream: true }) });
    return ndjsonResult<ImageInfo, PullProgress>(res.body, 'image', `the pull of ${image}`, opts.onProgress);
  }

  /** Upload a docker save archive or OCI layout tar. */
  importArchive(data: Readable | Buffer, opts: { name?: string } = {}): Promise<ImageInfo[]> {
    return this.http
      .raw('POST', '/v1/images/import', { body: data, contentType: 'application/octet-stream', query: { name: opts.name } })
      .then((r) => r.body.json() as Promise<ImageInfo[]>);
  }

  /** Import from a path on the daemon's own host (file or directory). */
  importPath(path: string, opts: { name?: string } = {}): Promise<ImageInfo[]> {
    return this.http.raw('POST', '/v1/images/import', { query: { path, name: opts.name } }).then((r) => r.body.json() as Promise<ImageInfo[]>);
  }
}
