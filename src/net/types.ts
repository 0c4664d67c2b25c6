// The network configuration a sandbox carries in its spec (stored with the record).

export type NetworkMode = 'none' | 'allowlist' | 'open';
export const NETWORK_MODES: readonly NetworkMode[] = ['none', 'allowlist', 'open'];

export interface HostIp {
  host: string;
  ip: string;
}

export interface SecretSpec {
  name: string;
  /** The real value; never rendered in views, events or the sandbox. */
  value: string;
  placeholder: string;
  hosts: string[];
}

export interface PortForward {
  local: number;
  remote: number;
  address: string;
}

export interface BodyReplacement {
  find: string;
  replace: string;
}

export interface HookRule {
  name?: string;
  phase: 'before' | 'after';
  hosts: string[];
  methods: string[];
  path?: string;
  action: 'allow' | 'block' | 'mutate' | 'callback';
  /** action callback: how long to wait for the SDK client's decision, and what applies without one. */
  timeoutMs?: number;
  onTimeout?: 'allow' | 'block';
  setHeaders?: Record<string, string>;
  deleteHeaders?: string[];
  setQuery?: Record<string, string>;
  deleteQuery?: string[];
  rewritePath?: string;
  setResponseHeaders?: Record<string, string>;
  deleteResponseHeaders?: string[];
  bodyReplacements?: BodyReplacement[];
}

export interface NetworkSpec {
  mode: NetworkMode;
  /** Allow entries: host globs with optional :port, IPv4 addresses and CIDRs. */
  allow: string[];
  /** Deny entries win over allow entries and over open mode. */
  deny: string[];
  addHosts: HostIp[];
  dnsServers: string[];
  mtu: number;
  secrets: SecretSpec[];
  ports: PortForward[];
  rules: HookRule[];
}

export const DEFAULT_MTU = 1500;

export function emptyNetwork(mode: NetworkMode = 'none'): NetworkSpec {
  return { mode, allow: [], deny: [], addHosts: [], dnsServers: [], mtu: DEFAULT_MTU, secrets: [], ports: [], rules: [] };
}

/** A sandbox needs its own linked namespace when it may talk out, or when ports are forwarded in. */
export function needsNamespace(n: NetworkSpec | undefined): boolean {
  return !!n && (n.mode !== 'none' || n.ports.length > 0);
}
