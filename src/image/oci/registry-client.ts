import { request, type Dispatcher } from 'undici';
import type { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { CordonError } from '../../errors/registry.js';
import { basicHeader, parseChallenge, type Credentials } from './auth.js';
import { MANIFEST_ACCEPT } from './manifest.js';
import { apiHost, isLoopbackRegistry, type ImageRef } from './reference.js';

export interface RegistryOptions {
  /** Registries (host[:port]) allowed over plain HTTP besides loopback ones. */
  insecure: string[];
  credentials?: Credentials;
}

const MAX_MANIFEST = 4 * 1024 * 1024;

/** One repository on one registry, speaking the OCI distribution API (pull side only). */
export class RegistryClient {
  private base?: string;
  private authHeader?: string;
  private readonly host: string;

  constructor(private readonly ref: ImageRef, private readonly opts: RegistryOptions) {
    this.host = apiHost(ref.registry);
  }

  private plainHttpAllowed(): boolean {
    return isLoopbackRegistry(this.ref.registry) || this.opts.insecure.includes(this.ref.registry);
  }

  /** HTTPS first; plain HTTP only for loopback or listed-insecure registries, as Docker does. */
  private async origin(): Promise<string> {
    if (this.base) return this.base;
    const https = `https://${this.host}`;
    if (!this.plainHttpAllowed()) return (this.base = https);
    try {
      const r = await request(`${https}/v2/`, { method: 'GET', headersTimeout: 5000 });
      await r.body.dump();
      return (this.base = https);
    } catch {
      return (this.base = `http://${this.host}`);
    }
  }

  private async send(path: string, headers: Record<string, string>, method: 'GET' | 'HEAD' = 'GET'): Promise<Dispatcher.ResponseData> {
    let url = `${await this.origin()}${path}`;
    let sendAuth = true;
    let retried = false;
    for (let hop = 0; hop < 6; hop++) {
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, { method, headers: { ...headers, ...(sendAuth && this.authHeader ? { authorization: this.authHeader } : {}) }, headersTimeout: 30_000, bodyTimeout: 60_000 });
      } catch (e) {
        throw new CordonError('unavailable', `registry ${this.ref.registry} is unreachable: ${(e as Error).message}`, { registry: this.ref.registry });
      }
      if (res.statusCode >= 300 && res.statusCode < 400 && res.headers.location) {
        await res.body.dump();
        const next = new URL(String(res.headers.location), url);
        if (next.protocol === 'http:' && new URL(url).protocol === 'https:') throw new CordonError('unavailable', `registry ${this.ref.registry} redirected from HTTPS to plain HTTP; refused`);
        if (next.host !== new URL(url).host) sendAuth = false; // credentials never follow a redirect to another host
        url = next.toString();
        continue;
      }
      // One new authorization per request: a first challenge, or a token that expired mid-pull
      // (registries hand out short-lived tokens, e.g. 300 s on Docker Hub, and big pulls outlast them).
      if (res.statusCode === 401 && sendAuth && !retried) {
        retried = true;
        if (await this.authenticate(res)) continue;
      }
      return res;
    }
    throw new CordonError('unavailable', `registry ${this.ref.registry} redirected too many times`);
  }

  /** Answer a 401 challenge; true when there is something new to retry with. */
  private async authenticate(res: Dispatcher.ResponseData): Promise<boolean> {
    await res.body.dump();
    const ch = parseChallenge(res.headers['www-authenticate'] as string | undefined);
    const creds = this.opts.credentials;
    if (ch?.scheme === 'basic') {
      if (!creds?.username || this.authHeader) return false;
      this.authHeader = basicHeader(creds);
      return true;
    }
    if (ch?.scheme !== 'bearer' || !ch.params.realm) return false;
    if (creds?.token) {
      if (this.authHeader) return false; // a fixed token that was refused cannot be renewed
      this.authHeader = `Bearer ${creds.token}`;
      return true;
    }
    const realm = new URL(ch.params.realm);
    // The realm gets the Basic credentials, so plain HTTP only where it cannot leave the machine or
    // the user said so: a loopback realm (e.g. a token server next to a local registry, on its own
    // port) or one listed as an insecure registry; the same rule as for registries themselves.
    if (realm.protocol !== 'https:' && !(realm.protocol === 'http:' && (isLoopbackRegistry(realm.host) || this.opts.insecure.includes(realm.host)))) {
      throw new CordonError('unavailable', `registry ${this.ref.registry} asks for a token from ${realm.origin}, which is not HTTPS; refused`);
    }
    if (ch.params.service) realm.searchParams.set('service', ch.params.service);
    realm.searchParams.set('scope', ch.params.scope ?? `repository:${this.ref.repository}:pull`);
    let tr: Dispatcher.ResponseData;
    try {
      tr = await request(realm, { headers: creds?.username ? { authorization: basicHeader(creds) } : {}, headersTimeout: 30_000 });
    } catch (e) {
      throw new CordonError('unavailable', `token service ${realm.origin} is unreachable: ${(e as Error).message}`);
    }
    if (tr.statusCode === 401 || tr.statusCode === 403) {
      await tr.body.dump();
      throw new CordonError('unauthenticated', `registry ${this.ref.registry} refused the credentials; check them (docker login, or username/password in the pull request)`);
    }
    const body = (await tr.body.json().catch(() => ({}))) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (tr.statusCode !== 200 || !token) throw new CordonError('unavailable', `token service ${realm.origin} answered ${tr.statusCode} without a token`);
    this.authHeader = `Bearer ${token}`;
    return true;
  }

  private async failure(res: Dispatcher.ResponseData, what: string): Promise<never> {
    const text = (await res.body.text().catch(() => '')).slice(0, 300);
    const ref = `${this.ref.registry}/${this.ref.repository}`;
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw new CordonError('unauthenticated', `registry ${this.ref.registry} denied access to ${ref}; give credentials (docker login / ~/.docker/config.json, or username and password)`, { registry: this.ref.registry });
    }
    if (res.statusCode === 404) throw new CordonError('not_found', `${what} not found in ${ref}; check the name and tag`, { image: ref });
    throw new CordonError('unavailable', `registry ${this.ref.registry} answered ${res.statusCode} for ${what}: ${text}`);
  }

  /** A manifest or index by tag or digest; when fetched by digest its bytes are verified. */
  async manifest(reference: string): Promise<{ bytes: Buffer; mediaType?: string; digest: string }> {
    const res = await this.send(`/v2/${this.ref.repository}/manifests/${reference}`, { accept: MANIFEST_ACCEPT });
    if (res.statusCode !== 200) return this.failure(res, `manifest ${reference}`);
    const chunks: Buffer[] = [];
    let len = 0;
    for await (const c of res.body) {
      len += (c as Buffer).length;
      if (len > MAX_MANIFEST) throw new CordonError('invalid_argument', `manifest ${reference} is larger than ${MAX_MANIFEST} bytes`);
      chunks.push(c as Buffer);
    }
    const bytes = Buffer.concat(chunks);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw new CordonError('invalid_argument', `manifest ${reference} is corrupt: its content hashes to ${digest}`);
    }
    const ct = String(res.headers['content-type'] ?? '').split(';')[0].trim();
    return { bytes, mediaType: ct || undefined, digest };
  }

  /** Stream a blob; the caller verifies its digest while reading. */
  async blob(digest: string): Promise<{ stream: Readable; size?: number }> {
    const res = await this.send(`/v2/${this.ref.repository}/blobs/${digest}`, {});
    if (res.statusCode !== 200) return this.failure(res, `blob ${digest}`);
    const size = Number(res.headers['content-length']);
    return { stream: res.body, size: Number.isFinite(size) ? size : undefined };
  }

  async blobBytes(digest: string, max: number): Promise<Buffer> {
    const { stream } = await this.blob(digest);
    const chunks: Buffer[] = [];
    let len = 0;
    for await (const c of stream) {
      len += (c as Buffer).length;
      if (len > max) throw new CordonError('invalid_argument', `blob ${digest} is larger than ${max} bytes`);
      chunks.push(c as Buffer);
    }
    const bytes = Buffer.concat(chunks);
    const got = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (got !== digest) throw new CordonError('invalid_argument', `blob ${digest} is corrupt: its content hashes to ${got}; nothing was kept`);
    return bytes;
  }
}
