// What the daemon counts and times, as an interface the lower layers call without knowing who
// listens. The daemon plugs in the Prometheus implementation (src/telemetry/prometheus.ts), or
// nothing: NO_TELEMETRY costs a function call.

/** Engine operations whose latency is recorded. */
export type Operation = 'create' | 'start' | 'stop' | 'pause' | 'resume' | 'remove' | 'exec' | 'process_start';

/** Why admission refused a create. */
export type RefusalReason = 'create_queue_full' | 'host_memory' | 'cpu_pressure' | 'max_sandboxes';

export type DnsOutcome = 'answered' | 'refused' | 'failed';

export interface Telemetry {
  /** An engine operation finished (ok or not) after `seconds`. */
  operation(op: Operation, runtime: string, seconds: number, ok: boolean): void;
  admissionRefused(reason: RefusalReason): void;
  imagePull(ok: boolean): void;
  /** One request (or CONNECT tunnel) through the egress proxy, with the bytes each way. */
  egressRequest(blocked: boolean, requestBytes: number, responseBytes: number): void;
  dnsAnswer(outcome: DnsOutcome): void;
}

export const NO_TELEMETRY: Telemetry = {
  operation() {},
  admissionRefused() {},
  imagePull() {},
  egressRequest() {},
  dnsAnswer() {},
};

/** Run `fn` and record its duration as `op`, whether it succeeds or throws. */
export async function timed<T>(t: Telemetry, op: Operation, runtime: string, fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  let ok = false;
  try {
    const v = await fn();
    ok = true;
    return v;
  } finally {
    t.operation(op, runtime, (performance.now() - started) / 1000, ok);
  }
}
