import type { Readable } from 'node:stream';
import { ndjsonResult } from './ndjson-result.js';
import type { Http } from './http.js';

export interface TemplateInfo {
  name: string;
  from: string;
  image_id: string | null;
  layers: string[];
  config: { env: string[]; workdir?: string; user?: string; entrypoint?: string[]; cmd?: string[] };
  exposed_ports: string[];
  labels: Record<string, string>;
  start_cmd: string | null;
  ready_cmd: string | null;
  ready_timeout_s: number | null;
  cpus: number | null;
  memory: number | null;
  /** The memory snapshot taken with the service up (runsc), or null. */
  snapshot: string | null;
  /** The warm pool: `network` of the `size` members have a deny-all network namespace (for creates with a network policy). */
  warm: { size: number; network: number; ready: number; network_ready: number; starting: number; claims: number; misses: number; last_error: string | null; members: string[] };
  dockerfile: string;
  created_at: string;
}

export type BuildEvent =
  | { type: 'status'; message: string }
  | { type: 'step'; step: number; total: number; instruction: string }
  | { type: 'cached'; step: number; layer: string }
  | { type: 'sandbox'; step: number; sandbox_id: string }
  | { type: 'log'; step: number; stream: 'stdout' | 'stderr'; data: string }
  | { type: 'layer'; step: number; layer: string };

export interface BuildOptions {
  /** The Dockerfile's path inside the context (default "Dockerfile"). */
  dockerfile?: string;
  cpus?: number;
  memory?: string;
  noCache?: boolean;
  /** Network of the build's RUN steps, as in a create request (default: none). */
  network?: Record<string, unknown>;
  buildArgs?: Record<string, string>;
  startCmd?: string;
  readyCmd?: string;
  /** How long the ready command may take to pass, in seconds (default 120). */
  readyTimeout?: number;
  /** Deadline of one RUN step, in seconds. */
  stepTimeout?: number;
  /** Keep this many started sandboxes of the template (its warm pool). */
  warm?: number;
  onEvent?: (ev: BuildEvent) => void;
}

/** Templates built from Dockerfiles. */
export class Templates {
  constructor(private readonly http: Http) {}

  list(): Promise<TemplateInfo[]> {
    return this.http.json<TemplateInfo[]>('GET', '/v1/templates');
  }
  get(name: string): Promise<TemplateInfo> {
    return this.http.json<TemplateInfo>('GET', `/v1/templates/${encodeURIComponent(name)}`);
  }
  /**
   * Set the size of the template's warm pool (0 empties it); `network` of them wait in a deny-all network
   * namespace for creates with a network policy (left out: the current number, at most size).
   */
  setWarm(name: string, size: number, opts: { network?: number } = {}): Promise<TemplateInfo> {
    return this.http.json<TemplateInfo>('PUT', `/v1/templates/${encodeURIComponent(name)}/warm`, { size, ...(opts.network !== undefined ? { network: opts.network } : {}) });
  }
  remove(name: string): Promise<{ removed: string }> {
    return this.http.json('DELETE', `/v1/templates/${encodeURIComponent(name)}`);
  }

  /** Build from a context tar; follows the build's events and resolves with the template or throws its error. */
  async build(name: string, context: Readable | Buffer, opts: BuildOptions = {}): Promise<TemplateInfo> {
    const qs = new URLSearchParams({ name });
    if (opts.dockerfile) qs.set('dockerfile', opts.dockerfile);
    if (opts.cpus !== undefined) qs.set('cpus', String(opts.cpus));
    if (opts.memory) qs.set('memory', opts.memory);
    if (opts.noCache) qs.set('no_cache', 'true');
    if (opts.network) qs.set('network', JSON.stringify(opts.network));
    for (const [k, v] of Object.entries(opts.buildArgs ?? {})) qs.append('build_arg', `${k}=${v}`);
    if (opts.startCmd) qs.set('start_cmd', opts.startCmd);
    if (opts.readyCmd) qs.set('ready_cmd', opts.readyCmd);
    if (opts.stepTimeout) qs.set('step_timeout', String(opts.stepTimeout));
    if (opts.readyTimeout) qs.set('ready_timeout', String(opts.readyTimeout));
    if (opts.warm !== undefined) qs.set('warm', String(opts.warm));
    const res = await this.http.raw('POST', `/v1/templates?${qs}`, { body: context, contentType: 'application/x-tar' });
    return ndjsonResult<TemplateInfo, BuildEvent>(res.body, 'template', `the build of ${name}`, opts.onEvent);
  }
}
