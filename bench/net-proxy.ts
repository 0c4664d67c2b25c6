// Egress proxy cost, inside a fake internet (its own namespace behind --egress-interface, never the
// uplink): HTTPS request latency from a sandbox's network namespace through cordon's transparent
// proxy vs a direct connection from the host namespace to the same server, in the same run
// (interleaved rounds; a new TLS connection per request, and keep-alive), then requests/s with 50
// concurrent keep-alive connections through the proxy and direct. The client is the same Node
// program in both cases (bench/net-client.ts), run in the sandbox's namespace of a crun sandbox
// (the namespace the sandbox's own traffic leaves through). Bounded: BENCH_RUNS requests per
// latency series (default 200), BENCH_LOAD requests or 20 s per load run; a watchdog ends it.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HostNet } from '../src/net/host-net.js';
import { REPO, startDaemon, type TestDaemon } from '../test/helpers/daemon.js';
import { startFakeInternet, type FakeInternet } from '../test/helpers/net-fake-internet.js';
import { ratio, row } from './lib/stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 200);
const LOAD = Number(process.env.BENCH_LOAD ?? 5000);
const ROUNDS = 4;
const SLOT = 9;
const CLIENT = join(REPO, 'dist', 'bench', 'net-client.js');

function client(netns: string | undefined, args: Record<string, unknown>): Promise<Record<string, unknown>> {
  const cmd = netns ? ['ip', ['netns', 'exec', netns, process.execPath, CLIENT, JSON.stringify(args)]] as const : [process.execPath, [CLIENT, JSON.stringify(args)]] as const;
  return new Promise((resolve, reject) => {
    const p = spawn(cmd[0], [...cmd[1]], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`client exited ${code}: ${err.trim()}`))));
  });
}

let d: TestDaemon | undefined;
let fi: FakeInternet | undefined;
const cleanup = async () => {
  await d?.cleanup().catch(() => {});
  await new HostNet({ slot: SLOT }).cleanup().catch(() => {});
  await fi?.close().catch(() => {});
};
const watchdog = setTimeout(() => {
  console.error('net-proxy bench: watchdog fired after 10 minutes; cleaning up');
  void cleanup().then(() => process.exit(1));
}, 10 * 60_000);

try {
  fi = await startFakeInternet(SLOT);
  d = await startDaemon('bench-net-proxy', { args: ['--egress-interface', fi.iface, '--upstream-ca', fi.caFile, '--dns-server', fi.api, '--network-slot', String(SLOT)] });
  const sb = await d.client.create({ runtime: 'crun', network: { allow_hosts: ['api.test'] } });
  const { netns } = JSON.parse(readFileSync(join(d.dataDir, 'net', 'links', `${sb.id}.json`), 'utf8')) as { netns: string };
  // Through the proxy: port 443 from the sandbox namespace is steered to cordon whatever the address.
  const viaProxy = { ip: fi.api, servername: 'api.test', caFiles: [join(d.dataDir, 'net-ca', 'ca.crt')] };
  const direct = { ip: fi.api, servername: 'api.test', caFiles: [fi.caFile] };
  await client(netns, { mode: 'latency', n: 5, ...viaProxy });
  await client(undefined, { mode: 'latency', n: 5, ...direct });

  console.log(`cordon net-proxy bench: fake internet ${fi.api} via ${fi.iface}; proxy client in ${netns} (crun sandbox); ${RUNS} requests per series in ${ROUNDS} interleaved rounds`);
  for (const keepAlive of [false, true]) {
    const p: number[] = [];
    const dd: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const n = Math.ceil(RUNS / ROUNDS);
      p.push(...((await client(netns, { mode: 'latency', n, keepAlive, ...viaProxy })).ms as number[]));
      dd.push(...((await client(undefined, { mode: 'latency', n, keepAlive, ...direct })).ms as number[]));
    }
    const kind = keepAlive ? 'keep-alive' : 'new TLS connection each';
    console.log(row(`HTTPS GET via proxy (${kind})`, p));
    console.log(row(`HTTPS GET direct (${kind})`, dd));
    console.log(`${'  proxy / direct'.padEnd(44)} ${ratio(p, dd)}   added p50 ${(median(p) - median(dd)).toFixed(1)} ms`);
  }
  for (const [name, where, target] of [['via proxy', netns, viaProxy], ['direct', undefined, direct]] as const) {
    const r = await client(where, { mode: 'load', n: LOAD, concurrency: 50, maxMs: 20_000, ...target });
    const rps = (r.done as number) / ((r.elapsedMs as number) / 1000);
    console.log(`${`requests/s, 50 connections (${name})`.padEnd(44)} ${rps.toFixed(0).padStart(8)} req/s   (${r.done} ok, ${r.failed} failed in ${((r.elapsedMs as number) / 1000).toFixed(1)} s)`);
  }
  console.log(`packets towards the outside guard address: ${await fi.outsideHits()}`);
  await sb.remove();
} finally {
  clearTimeout(watchdog);
  await cleanup();
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}
