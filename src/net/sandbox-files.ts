import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NetworkService } from './service.js';
import type { SandboxLink } from './sandbox-net.js';
import type { NetworkSpec } from './types.js';

// What a networked sandbox sees: resolv.conf pointing at the daemon, a CA bundle that trusts the
// daemon's CA, the variables common runtimes read it from, and secret placeholders instead of values.

export const CA_BUNDLE = '/.cordon/ca-bundle.crt';
const SYSTEM_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

export function networkEnv(n: NetworkSpec | undefined): Record<string, string> {
  if (!n || n.mode === 'none') return {};
  const env: Record<string, string> = {
    SSL_CERT_FILE: CA_BUNDLE, NODE_EXTRA_CA_CERTS: CA_BUNDLE, REQUESTS_CA_BUNDLE: CA_BUNDLE,
    CURL_CA_BUNDLE: CA_BUNDLE, GIT_SSL_CAINFO: CA_BUNDLE, AWS_CA_BUNDLE: CA_BUNDLE,
  };
  for (const s of n.secrets) env[s.name] = s.placeholder;
  return env;
}

export async function networkBinds(net: NetworkService, link: SandboxLink, bundleDir: string, rootfsDir: string) {
  const resolv = join(bundleDir, 'resolv.conf');
  await writeFile(resolv, net.resolvConf(link));
  const system = await readFile(join(rootfsDir, SYSTEM_BUNDLE), 'utf8').catch(() => '');
  const bundle = join(bundleDir, 'ca-bundle.crt');
  await writeFile(bundle, `${system.trimEnd()}\n${net.ca.caPem}`);
  const binds = [
    { source: resolv, destination: '/etc/resolv.conf', readOnly: true },
    { source: bundle, destination: CA_BUNDLE, readOnly: true },
  ];
  // Tools that ignore the variables read the distribution's bundle; it gets the daemon's CA too.
  if (existsSync(join(rootfsDir, SYSTEM_BUNDLE))) binds.push({ source: bundle, destination: SYSTEM_BUNDLE, readOnly: true });
  return binds;
}
