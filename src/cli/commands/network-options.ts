import { CordonError } from '../../errors/registry.js';
import type { NetworkOptions } from '../../sdk/types.js';

/** Network flags of run/create as the API's `network` object; undefined when none was given. */
export function networkOptionsFrom(o: Record<string, unknown>): NetworkOptions | undefined {
  const list = (k: string) => (o[k] as string[] | undefined) ?? [];
  const mode = o.network as string | undefined;
  if (mode !== undefined && !['none', 'allowlist', 'open'].includes(mode)) throw new CordonError('invalid_argument', `--network must be none, allowlist or open, got ${mode}`);
  const addHosts = list('addHost').map((s) => {
    const i = s.lastIndexOf(':');
    if (i <= 0) throw new CordonError('invalid_argument', `--add-host "${s}" must look like NAME:IP`);
    return { host: s.slice(0, i), ip: s.slice(i + 1) };
  });
  let mtu: number | undefined;
  if (o.mtu !== undefined) {
    mtu = Number(o.mtu);
    if (!Number.isInteger(mtu)) throw new CordonError('invalid_argument', `--mtu must be a whole number, got ${o.mtu}`);
  }
  const n: NetworkOptions = {
    ...(mode ? { mode: mode as NetworkOptions['mode'] } : {}),
    ...(list('allowHost').length ? { allow_hosts: list('allowHost') } : {}),
    ...(list('denyHost').length ? { deny_hosts: list('denyHost') } : {}),
    ...(addHosts.length ? { add_hosts: addHosts } : {}),
    ...(list('secret').length ? { secrets: list('secret') } : {}),
    ...(list('dnsServer').length ? { dns_servers: list('dnsServer') } : {}),
    ...(mtu !== undefined ? { mtu } : {}),
    ...(list('publish').length ? { ports: list('publish') } : {}),
  };
  return Object.keys(n).length ? n : undefined;
}
