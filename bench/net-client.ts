// HTTPS load client for bench/net-proxy.ts, run in a given network namespace (`ip netns exec`):
// `latency` makes sequential requests (a new TLS connection each, or one kept alive) and prints
// each duration; `load` keeps C connections busy until N requests are done or the time is up.
import https from 'node:https';
import { readFileSync } from 'node:fs';

interface Args {
  mode: 'latency' | 'load';
  ip: string;
  servername: string;
  caFiles: string[];
  n: number;
  keepAlive?: boolean;
  concurrency?: number;
  maxMs?: number;
}

const a = JSON.parse(process.argv[2]) as Args;
const ca = a.caFiles.map((f) => readFileSync(f, 'utf8'));

function request(agent: https.Agent, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: a.ip, port: 443, servername: a.servername, headers: { host: a.servername }, path, ca, agent, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

async function latency(): Promise<void> {
  const shared = new https.Agent({ keepAlive: true, maxSockets: 1 });
  const xs: number[] = [];
  for (let i = 0; i < a.n; i++) {
    const agent = a.keepAlive ? shared : new https.Agent({ keepAlive: false });
    const t = performance.now();
    await request(agent, `/lat/${i}`);
    xs.push(performance.now() - t);
    if (!a.keepAlive) agent.destroy();
  }
  shared.destroy();
  process.stdout.write(JSON.stringify({ ms: xs }));
}

async function load(): Promise<void> {
  const c = a.concurrency ?? 50;
  const agent = new https.Agent({ keepAlive: true, maxSockets: c });
  const deadline = performance.now() + (a.maxMs ?? 20_000);
  let started = 0;
  let done = 0;
  let failed = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: c }, async () => {
    while (started < a.n && performance.now() < deadline) {
      started++;
      await request(agent, `/load/${started}`).then(() => done++, () => failed++);
    }
  }));
  const elapsed = performance.now() - t0;
  agent.destroy();
  process.stdout.write(JSON.stringify({ done, failed, elapsedMs: elapsed }));
}

await (a.mode === 'latency' ? latency() : load());
