import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InRootError, readFileInRoot } from '../util/read-in-root.js';
import type { NetworkService } from './service.js';
import type { SandboxLink } from './sandbox-net.js';
import type { NetworkSpec } from './types.js';

// What a networked sandbox sees: resolv.conf pointing at the daemon, a CA bundle that trusts the
// daemon's CA, the variables common runtimes read it from, and secret placeholders instead of values.

export const CA_BUNDLE = '/.cordon/ca-bundle.crt';
const SYSTEM_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
/** A distribution bundle is a few hundred KiB; a bigger file there is left alone. */
const MAX_SYSTEM_BUNDLE = 8 * 1024 * 1024;
/** Where the runtime or cordon itself mounts something; the image's bundle path may not lead there. */
const RESERVED = ['/proc', '/sys', '/dev', '/.cordon', '/etc/hosts', '/etc/hostname', '/etc/resolv.conf'];
const PEM_CERT = /-----BEGIN (?:TRUSTED )?CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END (?:TRUSTED )?CERTIFICATE-----/g;

export function networkEnv(n: NetworkSpec | undefined): Record<string, string> {
  if (!n || n.mode === 'none') return {};
  const env: Record<string, string> = {
    SSL_CERT_FILE: CA_BUNDLE, NODE_EXTRA_CA_CERTS: CA_BUNDLE, REQUESTS_CA_BUNDLE: CA_BUNDLE,
    CURL_CA_BUNDLE: CA_BUNDLE, GIT_SSL_CAINFO: CA_BUNDLE, AWS_CA_BUNDLE: CA_BUNDLE,
  };
  for (const s of n.secrets) env[s.name] = s.placeholder;
  return env;
}

const reserved = (p: string) => RESERVED.some((r) => p === r || p.startsWith(`${r}/`));

/**
 * Files bind-mounted into a networked sandbox. The image's own CA bundle is read with the in-root
 * reader (its path may be a symlink, resolved inside the rootfs, never on the host) and only its
 * certificate blocks are kept; the merged bundle is mounted over the file the path really leads to.
 */
export async function networkBinds(net: NetworkService, link: SandboxLink, bundleDir: string, rootfsDir: string) {
  const resolv = join(bundleDir, 'resolv.conf');
  await writeFile(resolv, net.resolvConf(link));
  const system = await readFileInRoot(rootfsDir, SYSTEM_BUNDLE, MAX_SYSTEM_BUNDLE).catch((e: Error) => {
    if (e instanceof InRootError) return undefined;
    throw e;
  });
  const certs = system?.data.toString('utf8').match(PEM_CERT) ?? [];
  const bundle = join(bundleDir, 'ca-bundle.crt');
  await writeFile(bundle, [...certs, net.ca.caPem.trim()].join('\n') + '\n');
  const binds = [
    { source: resolv, destination: '/etc/resolv.conf', readOnly: true },
    { source: bundle, destination: CA_BUNDLE, readOnly: true },
  ];
  // Tools that ignore the variables read the distribution's bundle; it gets the daemon's CA too.
  if (system && !reserved(system.path)) binds.push({ source: bundle, destination: system.path, readOnly: true });
  return binds;
}
