import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { runOk } from '../util/proc.js';

// The daemon's own CA: the proxy terminates sandbox TLS with leaf certificates it signs, and the
// sandbox trusts it through its CA bundle. Made with the openssl CLI, kept in the data directory.

const EC = ['-pkeyopt', 'ec_paramgen_curve:prime256v1'];

export class CertAuthority {
  private readonly leaves = new Map<string, Promise<string>>();
  caPem = '';
  leafKeyPem = '';

  constructor(private readonly dir: string) {}

  get caFile(): string {
    return join(this.dir, 'ca.crt');
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const key = join(this.dir, 'ca.key');
    if (!existsSync(this.caFile) || !existsSync(key)) {
      await runOk('openssl', ['req', '-x509', '-newkey', 'ec', ...EC, '-nodes', '-days', '3650', '-subj', '/CN=cordon sandbox egress CA', '-keyout', key, '-out', this.caFile,
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    }
    const leafKey = join(this.dir, 'leaf.key');
    if (!existsSync(leafKey)) await runOk('openssl', ['genpkey', '-algorithm', 'ec', ...EC, '-out', leafKey]);
    this.caPem = await readFile(this.caFile, 'utf8');
    this.leafKeyPem = await readFile(leafKey, 'utf8');
  }

  /** A certificate for one host name, signed once and cached. */
  leaf(host: string): Promise<string> {
    let p = this.leaves.get(host);
    if (!p) {
      const san = /^\d+\.\d+\.\d+\.\d+$/.test(host) ? `IP:${host}` : `DNS:${host}`;
      p = runOk('openssl', ['req', '-new', '-x509', '-key', join(this.dir, 'leaf.key'), '-CA', this.caFile, '-CAkey', join(this.dir, 'ca.key'),
        '-subj', `/CN=${host}`, '-addext', `subjectAltName=${san}`, '-days', '30']).then((r) => r.stdout);
      p.catch(() => this.leaves.delete(host));
      this.leaves.set(host, p);
    }
    return p;
  }
}

/** Trust anchors for upstream TLS: the system store plus the operator's extra CA. */
export async function upstreamCas(extraFile?: string): Promise<string[]> {
  const cas = [...rootCertificates];
  if (extraFile) cas.push(await readFile(extraFile, 'utf8'));
  return cas;
}
