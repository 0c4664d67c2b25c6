// Admission under a create storm: a daemon with its default, host-derived sandbox cap and CPU-pressure
// admission on, creates fired CONCURRENCY at a time until admission has refused REFUSALS of them, while
// /v1/health is polled every 100 ms. Prints health latency percentiles during the storm, what the creates
// got (201 / 429 / 503, all with Retry-After), how many sandboxes ran at the end and the load average.
// No peer: the same storm without admission is what wedged this machine (issue 8), so it is not re-run.
import { loadavg } from 'node:os';
import { startDaemon } from '../test/helpers/daemon.js';
import { pct, row } from './lib/stats.js';

const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 4);
const REFUSALS = Number(process.env.BENCH_REFUSALS ?? 12);
const RUNTIME = process.env.BENCH_RUNTIME ?? 'runsc';

const d = await startDaemon('bench-admission', { args: ['--max-cpu-pressure', '90', '--runtime', RUNTIME] });
const health: number[] = [];
let storming = true;
const poll = (async () => {
  while (storming) {
    const t = performance.now();
    const res = await fetch(`${d.url}/v1/health`);
    await res.arrayBuffer();
    health.push(performance.now() - t);
    await new Promise((r) => setTimeout(r, 100));
  }
})();

const tally: Record<string, number> = {};
const ids: string[] = [];
let refused = 0;
let missingRetryAfter = 0;
const started = performance.now();
try {
  while (refused < REFUSALS && performance.now() - started < 10 * 60_000) {
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        const res = await fetch(`${d.url}/v1/sandboxes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
        const body = (await res.json()) as { id?: string };
        tally[res.status] = (tally[res.status] ?? 0) + 1;
        if (res.status === 201 && body.id) ids.push(body.id);
        else if (res.status === 429 || res.status === 503) {
          refused++;
          if (!res.headers.get('retry-after')) missingRetryAfter++;
        }
      }),
    );
  }
} finally {
  storming = false;
  await poll;
}
const seconds = ((performance.now() - started) / 1000).toFixed(1);
console.log(`storm on ${RUNTIME}, ${CONCURRENCY} creates at a time, for ${seconds} s: answers ${JSON.stringify(tally)}; refusals without Retry-After: ${missingRetryAfter}`);
console.log(`${ids.length} sandboxes running at the end; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
console.log(row('/v1/health during the storm', health));
console.log(`/v1/health p99 ${pct(health, 99).toFixed(1)} ms, max ${Math.max(...health).toFixed(1)} ms`);
for (const id of ids) await fetch(`${d.url}/v1/sandboxes/${id}?force=true`, { method: 'DELETE' }).catch(() => {});
await d.cleanup();
