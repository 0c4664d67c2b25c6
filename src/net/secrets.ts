import { randomBytes } from 'node:crypto';
import { CordonError } from '../errors/registry.js';
import { globToRegex } from './policy.js';
import type { SecretSpec } from './types.js';

// Secrets as placeholders: the sandbox only ever holds the placeholder; the proxy swaps in the value
// on requests to the secret's hosts and blocks any request that carries a placeholder elsewhere.

export const SECRET_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const HOST_RE = /^[a-z0-9*._-]+(:\d+)?$/;

/**
 * `NAME=VALUE@host1,host2`, or `NAME@hosts` whose value is the daemon variable NAME, which only
 * works for variables the operator allowed (`cordon serve --secret-env NAME`, in `daemonVars`).
 * Error messages name the entry by position and name only: the entry itself may be a secret value.
 */
export function parseSecret(spec: string, where: string, daemonVars: ReadonlyMap<string, string> = new Map()): SecretSpec {
  const at = spec.lastIndexOf('@');
  const left = at < 0 ? spec : spec.slice(0, at);
  const eq = left.indexOf('=');
  const name = eq < 0 ? left : left.slice(0, eq);
  const hosts = at < 0 ? [] : spec.slice(at + 1).split(',').map((h) => h.trim().toLowerCase()).filter(Boolean);
  const hostsOk = hosts.length > 0 && hosts.every((h) => HOST_RE.test(h));
  // Only a name that is plainly one (NAME=… or NAME@valid-hosts) is repeated: a malformed entry
  // may be a value given by mistake.
  const label = SECRET_NAME_RE.test(name) && (eq >= 0 || hostsOk) ? `${where} (secret ${name})` : where;
  if (at < 0) throw new CordonError('invalid_argument', `${label}: expected NAME=VALUE@host1,host2 or NAME@host1,host2`);
  if (!SECRET_NAME_RE.test(name)) throw new CordonError('invalid_argument', `${where}: the secret name (before = or @) must be letters, digits and _, not starting with a digit`);
  if (!hostsOk) throw new CordonError('invalid_argument', `${label}: give the hosts it may be sent to after @ (host names or globs, optionally :port)`);
  if (eq >= 0) {
    const value = left.slice(eq + 1);
    if (!value) throw new CordonError('invalid_argument', `${label}: the value after = is empty`);
    return { name, value, hosts, placeholder: placeholderFor(name) };
  }
  const value = daemonVars.get(name);
  if (value === undefined) {
    throw new CordonError('invalid_argument', `${label}: no value given and the daemon offers no variable ${name} for secrets; send ${name}=VALUE@hosts, or have the operator allow it with cordon serve --secret-env ${name}`);
  }
  return { name, value, hosts, placeholder: placeholderFor(name) };
}

/** The daemon variables `cordon serve --secret-env NAME` allows as secret values, read once at start. */
export function secretEnvFrom(names: string[], env: NodeJS.ProcessEnv): Map<string, string> {
  const vars = new Map<string, string>();
  for (const name of names) {
    if (!SECRET_NAME_RE.test(name)) throw new Error(`--secret-env ${JSON.stringify(name)}: give a variable name (letters, digits and _)`);
    const value = env[name];
    if (!value) throw new Error(`--secret-env ${name}: $${name} is not set in the daemon's environment; set it or drop the flag`);
    vars.set(name, value);
  }
  return vars;
}

export function placeholderFor(name: string): string {
  return `CORDON_SECRET_${name}_${randomBytes(12).toString('hex')}`;
}

/** Whether the secret may go to host (and port: an entry `host:443` binds the port too). */
export function secretHostMatches(s: SecretSpec, host: string, port?: number): boolean {
  return s.hosts.some((h) => {
    const m = /^(.*?)(?::(\d+))?$/.exec(h)!;
    return globToRegex(m[1]).test(host) && (m[2] === undefined || port === undefined || Number(m[2]) === port);
  });
}

/** Secrets whose placeholder occurs in the text. */
export function placeholdersIn(text: string, secrets: SecretSpec[]): SecretSpec[] {
  return secrets.filter((s) => text.includes(s.placeholder));
}

export function substitute(text: string, secrets: SecretSpec[]): string {
  let out = text;
  for (const s of secrets) out = out.split(s.placeholder).join(s.value);
  return out;
}

/** Replace any real secret value in text meant for display (events, logs) with its name. */
export function redact(text: string, secrets: SecretSpec[]): string {
  let out = text;
  for (const s of secrets) if (s.value.length >= 4) out = out.split(s.value).join(`[secret:${s.name}]`);
  return out;
}
