// GET /metrics: Prometheus text, behind the API key, parsed strictly; create/exec/pause/resume/remove
// move the latency histograms, an over-cap create moves the refusal counter, the sandbox gauge follows
// the sandboxes, per-sandbox gauges appear with --metrics-per-sandbox, and what a client sends never
// becomes a label value (cardinality).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { rejectsWith, until } from './helpers/assert.js';
import { parseProm, value, type Sample } from './helpers/prom-text.js';

const KEY = 'metrics-test-key-0123456789';
let d: TestDaemon;

before(async () => {
  d = await startDaemon('metrics', { apiKey: KEY, args: ['--max-sandboxes', String(RUNTIMES.length), '--metrics-per-sandbox'] });
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d.cleanup();
});

async function scrape(): Promise<Sample[]> {
  const res = await fetch(`${d.url}/metrics`, { headers: { authorization: `Bearer ${KEY}` } });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parseProm(await res.text());
}

const count = (s: Sample[], op: string, runtime: string, outcome = 'ok') => value(s, 'cordon_operation_duration_seconds_count', { op, runtime, outcome });

test('/metrics needs the API key like the rest of the API', async () => {
  const res = await fetch(`${d.url}/metrics`);
  assert.equal(res.status, 401);
  const body = (await res.json()) as { code: string; request_id: string };
  assert.equal(body.code, 'unauthenticated');
  assert.equal(body.request_id, res.headers.get('x-request-id'));
  const wrong = await fetch(`${d.url}/metrics`, { headers: { 'x-api-key': 'nope' } });
  assert.equal(wrong.status, 401);
});

test('process defaults: memory, CPU, event-loop lag', async () => {
  const s = await scrape();
  assert.ok(value(s, 'process_resident_memory_bytes') > 10 * 1024 * 1024, 'resident memory is reported');
  assert.ok(s.some((x) => x.name === 'nodejs_eventloop_lag_p99_seconds'), 'event-loop lag is reported');
  assert.ok(s.some((x) => x.name === 'process_cpu_seconds_total'));
  for (const reason of ['create_queue_full', 'host_memory', 'cpu_pressure', 'max_sandboxes']) {
    assert.ok(s.some((x) => x.name === 'cordon_admission_refusals_total' && x.labels.reason === reason), `refusal reason ${reason} is present from the start`);
  }
  for (const rt of RUNTIMES) assert.equal(value(s, 'cordon_sandboxes', { state: 'running', runtime: rt }), 0);
});

test('create, exec, pause, resume, remove move the histograms; refusals and gauges follow', async () => {
  const before = await scrape();
  const boxes: Sandbox[] = [];
  for (const runtime of RUNTIMES) boxes.push(await d.client.create({ runtime }));
  for (const b of boxes) assert.equal((await b.exec(['true'])).exit_code, 0);
  await rejectsWith(d.client.create({ runtime: RUNTIMES[0] }), 'too_many_sandboxes');
  const runsc = boxes[0];
  await runsc.pause();
  const paused = await scrape();
  assert.equal(value(paused, 'cordon_sandboxes', { state: 'paused', runtime: RUNTIMES[0] }), 1);
  await runsc.resume();

  const mid = await scrape();
  for (const runtime of RUNTIMES) {
    assert.equal(count(mid, 'create', runtime) - count(before, 'create', runtime), 1, `one create on ${runtime}`);
    assert.equal(count(mid, 'exec', runtime) - count(before, 'exec', runtime), 1, `one exec on ${runtime}`);
    assert.ok(count(mid, 'process_start', runtime) - count(before, 'process_start', runtime) >= 1);
    assert.equal(value(mid, 'cordon_sandboxes', { state: 'running', runtime }), 1, `one running sandbox on ${runtime}`);
    const sum = value(mid, 'cordon_operation_duration_seconds_sum', { op: 'create', runtime, outcome: 'ok' });
    assert.ok(sum > 0, 'the create took some time');
    // Buckets are cumulative and +Inf holds every observation.
    const buckets = mid.filter((x) => x.name === 'cordon_operation_duration_seconds_bucket' && x.labels.op === 'exec' && x.labels.runtime === runtime && x.labels.outcome === 'ok');
    assert.ok(buckets.length > 5);
    for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].value >= buckets[i - 1].value, 'buckets never decrease');
    assert.equal(buckets.at(-1)!.labels.le, '+Inf');
    assert.equal(buckets.at(-1)!.value, count(mid, 'exec', runtime));
  }
  assert.equal(count(mid, 'pause', RUNTIMES[0]) - count(before, 'pause', RUNTIMES[0]), 1);
  assert.equal(count(mid, 'resume', RUNTIMES[0]) - count(before, 'resume', RUNTIMES[0]), 1);
  assert.equal(value(mid, 'cordon_admission_refusals_total', { reason: 'max_sandboxes' }) - value(before, 'cordon_admission_refusals_total', { reason: 'max_sandboxes' }), 1);
  assert.ok(value(mid, 'cordon_http_request_duration_seconds_count', { method: 'POST', route: '/v1/sandboxes', status: '201' }) >= RUNTIMES.length);
  assert.equal(value(mid, 'cordon_http_request_duration_seconds_count', { method: 'POST', route: '/v1/sandboxes', status: '429' }), 1);

  // Per-sandbox gauges come from the 5 s samples.
  await until('per-sandbox gauges for every sandbox', async () => {
    const s = await scrape();
    return boxes.every((b) => s.some((x) => x.name === 'cordon_sandbox_memory_bytes' && x.labels.sandbox_id === b.id && x.value > 0));
  });

  for (const b of boxes) await b.remove();
  const end = await scrape();
  for (const runtime of RUNTIMES) {
    assert.equal(count(end, 'remove', runtime) - count(before, 'remove', runtime), 1, `one remove on ${runtime}`);
    assert.equal(value(end, 'cordon_sandboxes', { state: 'running', runtime }), 0, 'the gauge drops back');
  }
  for (const b of boxes) assert.ok(!end.some((x) => x.labels.sandbox_id === b.id), 'a removed sandbox has no series left');
});

test('hostile input never becomes a label value', async () => {
  const junk = `x${'y'.repeat(300)}`;
  const h = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
  const bad = await fetch(`${d.url}/v1/sandboxes`, { method: 'POST', headers: h, body: JSON.stringify({ runtime: junk }) });
  assert.equal(bad.status, 400);
  for (let i = 0; i < 5; i++) await fetch(`${d.url}/v1/${junk}${i}?q=${junk}`, { headers: h });
  assert.equal((await fetch(`${d.url}/v1/sandboxes/${junk}`, { headers: h })).status, 404);
  assert.equal((await fetch(`${d.url}/v1/sandboxes/nope`, { headers: h })).status, 404);
  const text = await (await fetch(`${d.url}/metrics`, { headers: h })).text();
  assert.ok(!text.includes('yyyy'), 'no label carries what the client sent');
  const s = parseProm(text);
  assert.ok(value(s, 'cordon_http_request_duration_seconds_count', { method: 'GET', route: 'unmatched', status: '404' }) >= 5, 'unknown routes share one label');
  assert.ok(s.some((x) => x.name === 'cordon_http_request_duration_seconds_count' && x.labels.route === '/v1/sandboxes/:id' && x.labels.status === '404'), 'routes are labelled by template');
});
