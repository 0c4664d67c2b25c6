import { randomBytes } from 'node:crypto';
import { CordonError } from '../errors/registry.js';
import { globToRegex } from './policy.js';
import type { SecretSpec } from './types.js';

// Secrets as placeholders: the sandbox only ever holds the placeholder; the proxy swaps in the value
// on requests to the secret's hosts and blocks any request that carries a placeholder elsewhere.

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

/** `NAME=VALUE@host1,host2` or `NAME@hosts` (value from the daemon's environment). */
export function parseSecret(spec: string, env: NodeJS.ProcessEnv = process.env): SecretSpec {
  const at = spec.lastIndexOf('@');
  if (at < 0) throw new CordonError('invalid_argument', `secret ${JSON.stringify(spec.split('=')[0])}: expected NAME=VALUE@host1,host2 or NAME@host1,host2`);
  const left = spec.slice(0, at);
  const hosts = spec.slice(at + 1).split(',').map((h) => h.trim().toLowerCase()).filter(Boolean);
  const eq = left.indexOf('=');
  const name = eq < 0 ? left : left.slice(0, eq);
  if (!NAME_RE.test(name)) throw new CordonError('invalid_argument', `secret name ${JSON.stringify(name)}: use letters, digits and _`);
  if (!hosts.length || hosts.some((h) => !/^[a-z0-9*._-]+(:\d+)?$/.test(h))) throw new CordonError('invalid_argument', `secret ${name}: give the hosts it may be sent to after @`);
  const value = eq < 0 ? env[name] : left.slice(eq + 1);
  if (value === undefined || value === '') throw new CordonError('invalid_argument', `secret ${name}: no value given and $${name} is not set in the daemon's environment`);
  return { name, value, hosts, placeholder: placeholderFor(name) };
}

export function placeholderFor(name: string): string {
  return `CORDON_SECRET_${name}_${randomBytes(12).toString('hex')}`;
}

export function secretHostMatches(s: SecretSpec, host: string): boolean {
  return s.hosts.some((h) => globToRegex(h.replace(/:\d+$/, '')).test(host));
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
