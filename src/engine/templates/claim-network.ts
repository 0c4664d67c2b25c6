import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { networkEnv } from '../../net/sandbox-files.js';
import { emptyNetwork, needsNamespace, type NetworkSpec } from '../../net/types.js';
import { hostsFile } from '../sandbox-boot.js';
import type { SandboxManager } from '../sandbox-manager.js';
import type { SandboxRecord } from '../types.js';

// Warm-pool members for creates with a network policy. Such a member boots like a cold create of a
// networked request (its own namespace, resolv.conf and CA bundle pointing at the daemon) but under a
// policy that reaches nothing; a claim swaps in the request's policy before the handle is returned.

/** Which requests a member serves: `net` members have a namespace, `plain` ones none (as a cold create). */
export type MemberKind = 'plain' | 'net';

/** The policy a networked member waits under: an allowlist with nothing in it (no DNS answer, no connection). */
export function memberNetwork(): NetworkSpec {
  return emptyNetwork('allowlist');
}

export function kindOf(network: NetworkSpec | undefined): MemberKind {
  return needsNamespace(network) ? 'net' : 'plain';
}

/** Why a networked member cannot take the request's network, or undefined. */
export function claimNetworkMismatch(want: NetworkSpec, member: NetworkSpec | undefined): string | undefined {
  // The link (veth) is made with its MTU when the member boots, and runsc reads it only then.
  if (member && want.mtu !== member.mtu) return `the request sets network mtu ${want.mtu}; a started sandbox's link has ${member.mtu}`;
  return undefined;
}

/**
 * The env a claimed sandbox's later commands see: what a cold create of the request gives (the
 * request's env, then what its network adds: CA bundle paths, secret placeholders), over the member's
 * own env less what its waiting network had added.
 */
export function claimEnv(rec: SandboxRecord, input: { env?: Record<string, string>; network?: NetworkSpec }): Record<string, string> {
  const own = { ...rec.spec.env };
  for (const k of Object.keys(networkEnv(rec.spec.network))) delete own[k];
  return { ...own, ...(input.env ?? {}), ...networkEnv(input.network) };
}

/**
 * Give a networked member the request's network: its /etc/hosts entries, its policy (DNS answers,
 * proxy rules, secrets, upstream DNS servers) and its port forwards. Called under the member's lock,
 * before the claim is recorded; on a throw the caller removes the member (it may be half-changed, but
 * it is never handed out).
 */
export async function applyClaimNetwork(mgr: SandboxManager, rec: SandboxRecord, want: NetworkSpec): Promise<void> {
  const net = mgr.net;
  if (!net || !net.attached(rec.id)) throw new Error(`pool member ${rec.id} has no network namespace`);
  // The bundle's hosts file is the engine's own (bind-mounted read-only); rewritten in place, so the
  // running sandbox sees the new entries.
  await writeFile(join(mgr.rootfs.dirs(rec.id).bundle, 'hosts'), hostsFile({ ...rec.spec, network: want }));
  await net.updatePolicy(rec.id, want);
  for (const f of want.ports) await net.addForward(rec.id, f);
}
