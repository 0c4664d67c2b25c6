import type { Http } from './http.js';

const enc = encodeURIComponent;

/** One S3 sync of a sandbox, as create takes it and inspect shows it. */
export interface S3SyncOptions {
  bucket: string;
  prefix?: string;
  /** Directory inside the sandbox. */
  path: string;
  mode: 'hooks' | 'on_demand' | 'mount';
  endpoint?: string;
  region?: string;
  /** Name of credentials registered with `s3.credentials.add`. */
  credentials: string;
  path_style?: boolean;
  max_file_size?: string | number;
  read_only?: boolean;
}

export interface SyncIssue {
  path: string;
  reason: string;
}

export interface SyncReport {
  direction: 'pull' | 'push';
  bucket: string;
  prefix: string;
  path: string;
  files: number;
  bytes: number;
  deleted: number;
  unchanged: number;
  skipped: SyncIssue[];
  conflicts: SyncIssue[];
  failed: SyncIssue[];
  complete: boolean;
  duration_ms: number;
}

export interface SyncResult {
  complete: boolean;
  reports: SyncReport[];
}

/** S3 credentials registered with the daemon; the secret goes in and never comes back. */
export class S3Credentials {
  constructor(private readonly http: Http) {}
  add(name: string, c: { access_key_id: string; secret_access_key: string; session_token?: string }) {
    return this.http.json<{ name: string }>('PUT', `/v1/s3/credentials/${enc(name)}`, c);
  }
  list() {
    return this.http.json<{ name: string; access_key_hint: string }[]>('GET', '/v1/s3/credentials');
  }
  remove(name: string) {
    return this.http.json<void>('DELETE', `/v1/s3/credentials/${enc(name)}`);
  }
}

export class S3 {
  readonly credentials: S3Credentials;
  constructor(http: Http) {
    this.credentials = new S3Credentials(http);
  }
}
