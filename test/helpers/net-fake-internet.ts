import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runOk } from '../../src/util/proc.js';
import { HostNet } from '../../src/net/host-net.js';
import { REPO, type TestDaemon } from './daemon.js';

// A fake internet for network tests: its own namespace behind a veth from the host, with DNS,
// HTTP and HTTPS servers the test controls. Nothing here ever routes towards the machine's uplink.

export interface FakeInternet {
  iface: string;
  /** The address DNS, api.test and the HTTP(S) servers answer on. */
  api: string;
  other: string;
  private: string;
  caFile: string;
  /** An address outside the fake internet (TEST-NET-3), guarded by a counting drop rule. */
  outside: string;
  outsideHits(): Promise<number>;
  /** `cordon serve` flags that send a daemon's egress (on network slot `slot`) into this fake internet. */
  daemonArgs(slot: number): string[];
  close(): Promise<void>;
}

export async function startFakeInternet(n: number): Promise<FakeInternet> {
  const ns = `cfi-${n}-${process.pid}`;
  const iface = `cfi${n}h`;
  // Public addresses from 198.18.0.0/15 (set aside for tests); 100.64.0.0/10 is a blocked range.
  const api = `198.18.${n}.2`, other = `198.18.${n}.3`, priv = `10.80.${n}.5`;
  const dir = mkdtempSync(join(tmpdir(), 'cordon-fi-'));
  const guard = `cordontest_guard${n}`;
  let server: ChildProcess | undefined;
  const close = async () => {
    server?.kill('SIGKILL');
    await run('ip', ['route', 'del', `${priv}/32`]);
    await run('ip', ['link', 'del', iface]);
    await run('ip', ['netns', 'del', ns]);
    await run('nft', ['delete', 'table', 'inet', guard]);
  };
  await close();
  const closeAll = async () => {
    await close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    // Counting guard: a packet to the "outside" address on any interface would show up here.
    await runOk('nft', ['-f', '-'], { input: `table inet ${guard} {\n chain out {\n  type filter hook output priority -300; policy accept;\n  ip daddr 203.0.113.0/24 counter drop\n }\n}\n` });
    const names = ['api.test', 'other.test', 'private.test', 'rebind.test', 'outside.test'];
    await runOk('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=cordon fake internet CA', '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.crt'), '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
    await runOk('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=api.test', '-CA', join(dir, 'ca.crt'), '-CAkey', join(dir, 'ca.key'), '-keyout', join(dir, 'leaf.key'), '-out', join(dir, 'leaf.crt'), '-addext', `subjectAltName=${names.map((x) => `DNS:${x}`).join(',')}`]);
    await runOk('ip', ['netns', 'add', ns]);
    await runOk('ip', ['link', 'add', iface, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await runOk('ip', ['addr', 'add', `198.18.${n}.1/24`, 'dev', iface]);
    await runOk('ip', ['link', 'set', iface, 'up']);
    await runOk('ip', ['-n', ns, '-batch', '-'], { input: `addr add ${api}/24 dev eth0\naddr add ${other}/24 dev eth0\naddr add ${priv}/32 dev eth0\nlink set eth0 up\nlink set lo up\n` });
    await runOk('ip', ['route', 'add', `${priv}/32`, 'via', api, 'dev', iface]);
    const records = { 'api.test': [api], 'other.test': [other], 'private.test': [priv], 'rebind-runsc.test': [api, priv], 'rebind-crun.test': [api, priv], 'outside.test': ['203.0.113.9'], 'cgnat.test': ['100.64.0.9'], 'ttl.test': [api, api, api, other] };
    writeFileSync(join(dir, 'cfg.json'), '');
    const cfg = JSON.stringify({ addrs: [api, other, priv], dnsAddr: api, records, key: join(dir, 'leaf.key'), cert: join(dir, 'leaf.crt') });
    server = spawn('ip', ['netns', 'exec', ns, process.execPath, join(REPO, 'dist', 'test', 'helpers', 'net-fake-server.js'), cfg], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      server!.stdout!.once('data', () => resolve());
      server!.once('exit', (c) => reject(new Error(`fake internet server exited ${c}`)));
    });
  } catch (e) {
    await closeAll();
    throw e;
  }
  return {
    iface, api, other, private: priv, caFile: join(dir, 'ca.crt'), outside: '203.0.113.9',
    async outsideHits() {
      const out = (await run('nft', ['list', 'table', 'inet', guard])).stdout;
      return Number(/packets (\d+)/.exec(out)?.[1] ?? -1);
    },
    daemonArgs: (slot) => ['--egress-interface', iface, '--upstream-ca', join(dir, 'ca.crt'), '--dns-server', api, '--network-slot', String(slot)],
    close: closeAll,
  };
}

/** After a network suite: its daemon's sandboxes and data, the slot's host state, the fake internet. */
export async function tearDownNetSuite(d: TestDaemon | undefined, slot: number, fi: FakeInternet | undefined): Promise<void> {
  for (const s of (await d?.client.list().catch(() => [])) ?? []) await d!.client.remove(s.id, { force: true }).catch(() => {});
  await d?.cleanup();
  await new HostNet({ slot }).cleanup();
  await fi?.close();
}
