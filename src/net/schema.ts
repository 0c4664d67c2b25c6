import { isIPv4 } from 'node:net';
import { z } from 'zod';
import { CordonError } from '../errors/registry.js';
import { parseEntry } from './policy.js';
import { parseSecret } from './secrets.js';
import { DEFAULT_MTU, NETWORK_MODES, type HookRule, type NetworkMode, type NetworkSpec, type PortForward } from './types.js';

// The `network` object of a create request, validated at the edge, and its translation to a NetworkSpec.

const entry = z.string().min(1).max(300).refine((s) => !!parseEntry(s), { message: 'a host glob (api.example.com, *.example.com), IPv4 address or CIDR, optionally :port' });
const ipv4 = z.string().refine((s) => isIPv4(s), { message: 'an IPv4 address' });
const hostname = z.string().regex(/^[a-z0-9_]([a-z0-9_.-]{0,252})$/i, 'a host name');
const headerMap = z.record(z.string().regex(/^[A-Za-z0-9-]{1,128}$/, 'a header name'), z.string().max(8192));
const portSpec = z.string().regex(/^(\d{1,5}:)?\d{1,5}$/, 'ports look like [LOCAL:]REMOTE');

export const ruleBody = z
  .object({
    name: z.string().max(128).optional(),
    phase: z.enum(['before', 'after']).default('before'),
    hosts: z.array(z.string().min(1).max(300)).max(64).default([]),
    methods: z.array(z.string().regex(/^[A-Z]{1,16}$/i)).max(16).default([]),
    path: z.string().max(1024).optional(),
    action: z.enum(['allow', 'block', 'mutate', 'callback']).default('mutate'),
    timeout_ms: z.number().int().min(1).max(120_000).optional(),
    on_timeout: z.enum(['allow', 'block']).optional(),
    set_headers: headerMap.optional(),
    delete_headers: z.array(z.string().max(128)).max(64).optional(),
    set_query: z.record(z.string().max(256), z.string().max(4096)).optional(),
    delete_query: z.array(z.string().max(256)).max(64).optional(),
    rewrite_path: z.string().startsWith('/').max(2048).optional(),
    set_response_headers: headerMap.optional(),
    delete_response_headers: z.array(z.string().max(128)).max(64).optional(),
    body_replacements: z.array(z.object({ find: z.string().min(1).max(4096), replace: z.string().max(65536).default('') }).strict()).max(64).optional(),
  })
  .strict()
  .refine((r) => r.action === 'callback' || (r.timeout_ms === undefined && r.on_timeout === undefined), { message: 'timeout_ms and on_timeout are for action callback' });

export const networkBody = z
  .object({
    mode: z.enum(NETWORK_MODES as [NetworkMode, ...NetworkMode[]]).optional(),
    allow_hosts: z.array(entry).max(256).optional(),
    deny_hosts: z.array(entry).max(256).optional(),
    add_hosts: z.array(z.object({ host: hostname, ip: ipv4 }).strict()).max(256).optional(),
    secrets: z.array(z.string().min(3).max(16384)).max(64).optional(),
    dns_servers: z.array(ipv4).max(8).optional(),
    mtu: z.number().int().min(576).max(9000).optional(),
    ports: z.array(portSpec).max(64).optional(),
    rules: z.array(ruleBody).max(128).optional(),
  })
  .strict();

export type NetworkBody = z.infer<typeof networkBody>;
export type RuleBody = z.infer<typeof ruleBody>;

export function parsePortForward(spec: string, field = 'network.ports'): PortForward {
  const parts = spec.split(':').map(Number);
  const [local, remote] = parts.length === 2 ? parts : [parts[0], parts[0]];
  for (const p of [local, remote]) if (!Number.isInteger(p) || p < 1 || p > 65535) throw new CordonError('invalid_argument', `${field}: ${spec} has an invalid port (1-65535)`);
  return { local, remote, address: '127.0.0.1' };
}

export function toRule(r: RuleBody): HookRule {
  return {
    name: r.name, phase: r.phase, hosts: r.hosts, methods: r.methods, path: r.path, action: r.action,
    ...(r.action === 'callback' ? { timeoutMs: r.timeout_ms ?? 5000, onTimeout: r.on_timeout ?? 'block' } : {}),
    setHeaders: r.set_headers, deleteHeaders: r.delete_headers, setQuery: r.set_query, deleteQuery: r.delete_query, rewritePath: r.rewrite_path,
    setResponseHeaders: r.set_response_headers, deleteResponseHeaders: r.delete_response_headers,
    bodyReplacements: r.body_replacements?.map((b) => ({ find: b.find, replace: b.replace })),
  };
}

/** What the daemon contributes to a sandbox's network spec. */
export interface NetworkDefaults {
  defaultMode: NetworkMode;
  /** Daemon variables allowed as secret values (cordon serve --secret-env NAME). */
  secretEnv?: ReadonlyMap<string, string>;
}

/** Mode defaults: allow entries imply allowlist; otherwise the daemon's default. */
export function toNetworkSpec(b: NetworkBody | undefined, d: NetworkDefaults): NetworkSpec | undefined {
  const defaultMode = d.defaultMode;
  if (!b) return defaultMode === 'none' ? undefined : { ...base(defaultMode) };
  const mode = b.mode ?? (b.allow_hosts?.length ? 'allowlist' : defaultMode);
  const secrets = (b.secrets ?? []).map((s, i) => parseSecret(s, `network.secrets[${i}]`, d.secretEnv));
  const names = new Set<string>();
  for (const s of secrets) {
    if (names.has(s.name)) throw new CordonError('invalid_argument', `network.secrets: ${s.name} is given twice`);
    names.add(s.name);
  }
  if (secrets.length && mode === 'none') throw new CordonError('invalid_argument', 'network.secrets: secrets need network mode allowlist or open');
  return {
    ...base(mode),
    allow: b.allow_hosts ?? [],
    deny: b.deny_hosts ?? [],
    addHosts: b.add_hosts ?? [],
    dnsServers: b.dns_servers ?? [],
    mtu: b.mtu ?? DEFAULT_MTU,
    secrets,
    ports: (b.ports ?? []).map((p) => parsePortForward(p)),
    rules: (b.rules ?? []).map(toRule),
  };
}

function base(mode: NetworkMode): NetworkSpec {
  return { mode, allow: [], deny: [], addHosts: [], dnsServers: [], mtu: DEFAULT_MTU, secrets: [], ports: [], rules: [] };
}

/** The sandbox JSON's view of its network: everything but secret values (never add them here). */
export function networkView(n: NetworkSpec | undefined) {
  if (!n) return { mode: 'none' as const };
  return {
    mode: n.mode,
    allow_hosts: n.allow,
    deny_hosts: n.deny,
    add_hosts: n.addHosts,
    dns_servers: n.dnsServers,
    mtu: n.mtu,
    secrets: n.secrets.map((s) => ({ name: s.name, placeholder: s.placeholder, hosts: s.hosts })),
    ports: n.ports.map((p) => ({ address: p.address, local_port: p.local, remote_port: p.remote })),
    rules: n.rules.length,
  };
}
