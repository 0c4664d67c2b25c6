// @peculiar/x509 resolves its encoders through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';

// The daemon's own CA: the proxy terminates sandbox TLS with leaf certificates it signs, and the
// sandbox trusts it through its CA bundle. Keys and certificates are made in process (ECDSA P-256);
// the CA lives in the data directory (key 0600), leaves only in a bounded, expiring cache.

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const HOUR = 3600_000;
const DAY = 24 * HOUR;

export interface LeafCacheOptions {
  /** Most leaf certificates kept; the least recently used goes first. */
  maxLeaves: number;
  /** How long a cached leaf is served; well before its notAfter, so none in use ever expires. */
  cacheTtlMs: number;
  /** A leaf's validity (notBefore is an hour back, for clocks that lag). */
  validityMs: number;
}

const DEFAULTS: LeafCacheOptions = { maxLeaves: 1000, cacheTtlMs: DAY, validityMs: 7 * DAY };

interface CachedLeaf {
  cert: Promise<string>;
  expires: number;
}

function serial(): string {
  const b = randomBytes(16);
  b[0] &= 0x7f; // a positive INTEGER
  return b.toString('hex');
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').trimEnd();
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

export class CertAuthority {
  private readonly leaves = new Map<string, CachedLeaf>();
  private readonly opts: LeafCacheOptions;
  private caCert?: x509.X509Certificate;
  private caKey?: CryptoKey;
  private leafKeys?: CryptoKeyPair;
  caPem = '';
  leafKeyPem = '';
  /** Leaf certificates signed since start (each cache miss signs one). */
  signed = 0;

  constructor(
    private readonly dir: string,
    opts: Partial<LeafCacheOptions> = {},
  ) {
    this.opts = { ...DEFAULTS, ...opts };
  }

  get caFile(): string {
    return join(this.dir, 'ca.crt');
  }

  private get keyFile(): string {
    return join(this.dir, 'ca.key');
  }

  get cachedLeaves(): number {
    return this.leaves.size;
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await chmod(this.dir, 0o700);
    if (!existsSync(this.caFile) || !existsSync(this.keyFile)) await this.create();
    await chmod(this.keyFile, 0o600);
    this.caPem = await readFile(this.caFile, 'utf8');
    this.caCert = new x509.X509Certificate(this.caPem);
    const der = createPrivateKey(await readFile(this.keyFile, 'utf8')).export({ type: 'pkcs8', format: 'der' });
    this.caKey = await webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']).catch(() => {
      throw new Error(`${this.keyFile} is not an ECDSA P-256 key; remove ${this.dir} to have a new CA made (sandboxes started after that trust the new one)`);
    });
    // One leaf key per daemon run, never written to disk (older versions left one there).
    this.leafKeys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
    this.leafKeyPem = pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', this.leafKeys.privateKey));
    await rm(join(this.dir, 'leaf.key'), { force: true });
  }

  private async create(): Promise<void> {
    const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name: 'CN=cordon sandbox egress CA',
      notBefore: new Date(now - HOUR),
      notAfter: new Date(now + 3650 * DAY),
      keys,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    // The key first: a cert without its key is remade, never a key without its cert left in use.
    await writeFile(this.keyFile, pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)), { mode: 0o600 });
    await writeFile(this.caFile, cert.toString('pem') + '\n', { mode: 0o644 });
  }

  /** A certificate for one host name (or IPv4 address), from the cache or signed now. */
  leaf(host: string): Promise<string> {
    const now = Date.now();
    const hit = this.leaves.get(host);
    if (hit) this.leaves.delete(host);
    if (hit && hit.expires > now) {
      this.leaves.set(host, hit); // most recently used last
      return hit.cert;
    }
    const entry: CachedLeaf = { cert: this.sign(host, now), expires: now + this.opts.cacheTtlMs };
    entry.cert.catch(() => {
      if (this.leaves.get(host) === entry) this.leaves.delete(host);
    });
    this.leaves.set(host, entry);
    while (this.leaves.size > this.opts.maxLeaves) this.leaves.delete(this.leaves.keys().next().value!);
    return entry.cert;
  }

  private async sign(host: string, now: number): Promise<string> {
    if (!this.caCert || !this.caKey || !this.leafKeys) throw new Error('the CA is not initialised');
    if (!/^[a-z0-9_.-]{1,253}$/i.test(host)) throw new Error(`no certificate for a malformed host name`);
    const ip = /^\d+\.\d+\.\d+\.\d+$/.test(host);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: `CN=${host.slice(0, 64)}`, // CN is at most 64 characters; clients check the SAN
      issuer: this.caCert.subject,
      notBefore: new Date(now - HOUR),
      notAfter: new Date(now + this.opts.validityMs),
      signingKey: this.caKey,
      publicKey: this.leafKeys.publicKey,
      signingAlgorithm: ALG,
      extensions: [
        new x509.SubjectAlternativeNameExtension([{ type: ip ? 'ip' : 'dns', value: host }]),
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        await x509.AuthorityKeyIdentifierExtension.create(this.caCert),
      ],
    });
    this.signed++;
    return cert.toString('pem') + '\n';
  }
}

/** Trust anchors for upstream TLS: the system store plus the operator's extra CA. */
export async function upstreamCas(extraFile?: string): Promise<string[]> {
  const cas = [...rootCertificates];
  if (extraFile) cas.push(await readFile(extraFile, 'utf8'));
  return cas;
}
