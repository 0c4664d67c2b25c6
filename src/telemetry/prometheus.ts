import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { DnsOutcome, Operation, RefusalReason, Telemetry } from './telemetry.js';

/** What is read from the engine at scrape time (never stored twice, never stale). */
export interface ScrapeSources {
  /** Sandboxes per state and runtime. */
  sandboxCounts(): { state: string; runtime: string; count: number }[];
  /** Latest resource sample of each running sandbox; only asked with perSandbox on. */
  sandboxSamples?(): { id: string; runtime: string; cpuPercent: number; memoryBytes: number }[];
  /** Warm pools: members ready and starting, claims and misses since the daemon started. */
  warmPools?(): { template: string; ready: number; starting: number; claims: number; misses: number }[];
}

// Seconds; sandbox operations range from a few ms (crun exec) to tens of seconds (an image pull inside a create).
const OPERATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const REQUEST_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * The daemon's Prometheus metrics: one registry per daemon, prom-client's default process metrics
 * (memory, CPU, event-loop lag, handles), and cordon's own, all named cordon_*.
 */
export class PrometheusTelemetry implements Telemetry {
  readonly registry = new Registry();
  private readonly operations: Histogram<'op' | 'runtime' | 'outcome'>;
  private readonly refusals: Counter<'reason'>;
  private readonly pulls: Counter<'outcome'>;
  private readonly egress: Counter<'verdict'>;
  private readonly egressBytes: Counter<'direction'>;
  private readonly dns: Counter<'outcome'>;
  private readonly requests: Histogram<'method' | 'route' | 'status'>;

  constructor(sources: ScrapeSources, opts: { perSandbox: boolean }) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 20 });
    new Gauge({
      name: 'cordon_sandboxes',
      help: 'Sandboxes by state and runtime',
      labelNames: ['state', 'runtime'],
      registers,
      collect() {
        this.reset();
        for (const c of sources.sandboxCounts()) this.set({ state: c.state, runtime: c.runtime }, c.count);
      },
    });
    if (sources.warmPools) {
      const pools = sources.warmPools.bind(sources);
      new Gauge({
        name: 'cordon_warm_pool_sandboxes',
        help: 'Unclaimed sandboxes in warm pools, by template and state (ready, starting)',
        labelNames: ['template', 'state'],
        registers,
        collect() {
          this.reset();
          for (const p of pools()) {
            this.set({ template: p.template, state: 'ready' }, p.ready);
            this.set({ template: p.template, state: 'starting' }, p.starting);
          }
        },
      });
      new Gauge({
        name: 'cordon_warm_pool_creates',
        help: 'Creates of a pooled template since the daemon started, by outcome (claim: served by the pool; miss: created cold)',
        labelNames: ['template', 'outcome'],
        registers,
        collect() {
          this.reset();
          for (const p of pools()) {
            this.set({ template: p.template, outcome: 'claim' }, p.claims);
            this.set({ template: p.template, outcome: 'miss' }, p.misses);
          }
        },
      });
    }
    this.operations = new Histogram({
      name: 'cordon_operation_duration_seconds',
      help: 'Duration of sandbox operations (create, start, stop, pause, resume, remove, exec, process_start) by runtime and outcome',
      labelNames: ['op', 'runtime', 'outcome'],
      buckets: OPERATION_BUCKETS,
      registers,
    });
    this.refusals = new Counter({ name: 'cordon_admission_refusals_total', help: 'Creates refused by admission, by reason', labelNames: ['reason'], registers });
    this.pulls = new Counter({ name: 'cordon_image_pulls_total', help: 'Image pulls by outcome', labelNames: ['outcome'], registers });
    this.egress = new Counter({ name: 'cordon_egress_requests_total', help: 'Requests and tunnels through the egress proxy, by verdict', labelNames: ['verdict'], registers });
    this.egressBytes = new Counter({ name: 'cordon_egress_bytes_total', help: 'Bytes through the egress proxy; direction request = sandbox to upstream', labelNames: ['direction'], registers });
    this.dns = new Counter({ name: 'cordon_dns_answers_total', help: 'DNS queries from sandboxes by outcome (answered, refused by policy, failed upstream)', labelNames: ['outcome'], registers });
    this.requests = new Histogram({
      name: 'cordon_http_request_duration_seconds',
      help: 'API requests by method, route template and status',
      labelNames: ['method', 'route', 'status'],
      buckets: REQUEST_BUCKETS,
      registers,
    });
    // Label values that exist before anything happens, so dashboards and rate() see zeros, not gaps.
    for (const reason of ['create_queue_full', 'host_memory', 'cpu_pressure', 'max_sandboxes'] satisfies RefusalReason[]) this.refusals.inc({ reason }, 0);
    for (const outcome of ['ok', 'error']) this.pulls.inc({ outcome }, 0);
    for (const verdict of ['allowed', 'blocked']) this.egress.inc({ verdict }, 0);
    for (const direction of ['request', 'response']) this.egressBytes.inc({ direction }, 0);
    for (const outcome of ['answered', 'refused', 'failed'] satisfies DnsOutcome[]) this.dns.inc({ outcome }, 0);

    if (opts.perSandbox && sources.sandboxSamples) {
      const samples = sources.sandboxSamples.bind(sources);
      new Gauge({
        name: 'cordon_sandbox_cpu_percent',
        help: 'CPU use of each running sandbox in percent of one core (latest 5 s sample)',
        labelNames: ['sandbox_id', 'runtime'],
        registers,
        collect() {
          this.reset();
          for (const s of samples()) this.set({ sandbox_id: s.id, runtime: s.runtime }, s.cpuPercent);
        },
      });
      new Gauge({
        name: 'cordon_sandbox_memory_bytes',
        help: 'Memory use of each running sandbox (latest 5 s sample)',
        labelNames: ['sandbox_id', 'runtime'],
        registers,
        collect() {
          this.reset();
          for (const s of samples()) this.set({ sandbox_id: s.id, runtime: s.runtime }, s.memoryBytes);
        },
      });
    }
  }

  operation(op: Operation, runtime: string, seconds: number, ok: boolean): void {
    this.operations.observe({ op, runtime, outcome: ok ? 'ok' : 'error' }, seconds);
  }

  admissionRefused(reason: RefusalReason): void {
    this.refusals.inc({ reason });
  }

  imagePull(ok: boolean): void {
    this.pulls.inc({ outcome: ok ? 'ok' : 'error' });
  }

  egressRequest(blocked: boolean, requestBytes: number, responseBytes: number): void {
    this.egress.inc({ verdict: blocked ? 'blocked' : 'allowed' });
    if (requestBytes > 0) this.egressBytes.inc({ direction: 'request' }, requestBytes);
    if (responseBytes > 0) this.egressBytes.inc({ direction: 'response' }, responseBytes);
  }

  dnsAnswer(outcome: DnsOutcome): void {
    this.dns.inc({ outcome });
  }

  /** One API request; `route` is the matched route's template (bounded), never the raw URL. */
  httpRequest(method: string, route: string, status: number, seconds: number): void {
    this.requests.observe({ method, route, status: String(status) }, seconds);
  }

  contentType(): string {
    return this.registry.contentType;
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
