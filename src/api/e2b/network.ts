// E2B's network options mapped onto cordon's egress policy: `allow_internet_access` and
// `network.allowOut/denyOut` (0.0.0.0/0 = all traffic) and per-domain header `rules`.
// E2B lets allow entries win over deny entries; cordon's deny entries win, so deny entries that an
// allow entry names are dropped. With no egress interface configured, E2B's default (internet
// access) gives a sandbox no network rather than an error; explicit allowOut entries are refused.
import { z } from 'zod';
import { CordonError } from '../../errors/registry.js';
import { parseEntry } from '../../net/policy.js';
import { emptyNetwork, type HookRule, type NetworkSpec } from '../../net/types.js';

export const ALL_TRAFFIC = '0.0.0.0/0';

const headers = z.record(z.string().regex(/^[A-Za-z0-9-]{1,128}$/, 'a header name'), z.string().max(8192));
export const e2bNetworkBody = z
  .object({
    allowOut: z.array(z.string().max(300)).max(256).nullish(),
    denyOut: z.array(z.string().max(300)).max(256).nullish(),
    rules: z.record(z.string().min(1).max(300), z.array(z.object({ transform: z.object({ headers: headers.optional() }).passthrough().optional() }).passthrough()).max(16)).nullish(),
    egressProxy: z.unknown().optional(),
    allowPublicTraffic: z.boolean().optional(),
    maskRequestHost: z
      .string()
      .max(300)
      .regex(/^([A-Za-z0-9._:[\]-]|\$\{PORT\})+$/, 'a host (and port) for the Host header; ${PORT} stands for the sandbox port')
      .optional(),
    httpsPorts: z.array(z.number().int()).max(64).optional(),
  })
  .passthrough();
export type E2bNetworkBody = z.infer<typeof e2bNetworkBody>;

function entries(field: string, xs: string[]): string[] {
  for (const x of xs) {
    if (x !== ALL_TRAFFIC && !parseEntry(x)) throw new CordonError('invalid_argument', `network.${field}: ${JSON.stringify(x)} is not a host name (api.example.com, *.example.com), IPv4 address or CIDR`);
  }
  return xs.filter((x) => x !== ALL_TRAFFIC);
}

/** The egress part of a cordon NetworkSpec for an E2B request; undefined means no network at all. */
export function fromE2b(allowInternet: boolean | null | undefined, n: E2bNetworkBody | null | undefined, egressConfigured: boolean): Pick<NetworkSpec, 'mode' | 'allow' | 'deny' | 'rules'> | undefined {
  if (n?.egressProxy) throw new CordonError('invalid_argument', 'network.egressProxy: an upstream egress proxy is not supported by cordon; leave it out');
  const allowOut = n?.allowOut ?? [];
  const denyOut = n?.denyOut ?? [];
  const allow = entries('allowOut', allowOut);
  const denied = entries('denyOut', denyOut);
  const rules: HookRule[] = Object.entries(n?.rules ?? {}).flatMap(([host, rs]) =>
    rs.filter((r) => r.transform?.headers && Object.keys(r.transform.headers).length).map((r) => ({ phase: 'before' as const, hosts: [host.toLowerCase()], methods: [], action: 'mutate' as const, setHeaders: r.transform!.headers })),
  );
  const denyAll = allowInternet === false || denyOut.includes(ALL_TRAFFIC);
  const mode = allowOut.includes(ALL_TRAFFIC) || !denyAll ? 'open' : 'allowlist';
  if (!egressConfigured) {
    if (allow.length) throw new CordonError('invalid_argument', 'network.allowOut: this cordon daemon has no egress interface (cordon serve --egress-interface IFACE), so sandboxes cannot reach anything; leave allowOut out to get a sandbox without network');
    return undefined;
  }
  // An allowlist with nothing in it still gets its namespace, so PUT /sandboxes/{id}/network can open it later.
  return { mode, allow, deny: mode === 'allowlist' ? [] : denied.filter((d) => !allow.includes(d)), rules };
}

export function e2bNetworkSpec(allowInternet: boolean | null | undefined, n: E2bNetworkBody | null | undefined, egressConfigured: boolean): NetworkSpec | undefined {
  const p = fromE2b(allowInternet, n, egressConfigured);
  return p ? { ...emptyNetwork(p.mode), ...p } : undefined;
}

/** The network part of E2B's SandboxDetail. */
export function e2bNetworkView(n: NetworkSpec | undefined) {
  if (!n || n.mode === 'none') return { allowInternetAccess: false, network: { allowOut: [], denyOut: [ALL_TRAFFIC] } };
  if (n.mode === 'allowlist') return { allowInternetAccess: false, network: { allowOut: n.allow, denyOut: [ALL_TRAFFIC] } };
  return { allowInternetAccess: true, network: { allowOut: n.allow, denyOut: n.deny } };
}
