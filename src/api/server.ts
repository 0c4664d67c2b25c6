import type { IncomingMessage } from 'node:http';
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type RawReplyDefaultExpression, type RawRequestDefaultExpression, type RawServerDefault } from 'fastify';
import swagger from '@fastify/swagger';
import websocket from '@fastify/websocket';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { DaemonConfig } from '../config.js';
import { CordonError, retryAfterSeconds } from '../errors/registry.js';
import type { SandboxManager } from '../engine/sandbox-manager.js';
import { apiKeyMatches } from './auth.js';
import { registerSandboxRoutes } from './routes/sandboxes.js';
import { registerNetworkRoutes } from './routes/network.js';
import { registerProcessRoutes } from './routes/processes.js';
import { registerFileRoutes } from './routes/files.js';
import { registerSystemRoutes } from './routes/system.js';
import { registerE2b } from './e2b/index.js';
import { UPLOAD_PREFIX } from './e2b/template-files.js';
import { SandboxPortProxy } from '../net/port-proxy.js';
import { registerImageRoutes } from './routes/images.js';
import { registerSnapshotRoutes } from './routes/snapshots.js';
import type { ImageStore } from '../image/oci/image-store.js';
import type { NetworkService } from '../net/service.js';
import type { Logger } from 'pino';
import { registerRequestLog, requestId, type RequestObserver } from './request-log.js';
import { registerMetricsRoute } from './routes/metrics.js';
import { registerTemplateRoutes, type TemplateDeps } from './routes/templates.js';
import type { VolumeManager } from '../engine/volumes.js';
import { registerVolumeRoutes } from './routes/volumes.js';
import { registerMcpRoute } from './routes/mcp.js';

/** The most of a refused request's body read and discarded so its client gets the answer. */
const DRAIN_REFUSED_BODY_MAX = 64 * 1024 * 1024;
/** How long the rest of a refused body may take to arrive before the connection is closed instead. */
const DRAIN_REFUSED_BODY_MS = 10_000;

/** Read and discard what is left of a request body; resolves at its end, on error, after `ms`, or past `max` bytes. */
function drained(body: IncomingMessage, ms: number, max: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const count = (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > max) done();
    };
    const done = () => {
      clearTimeout(timer);
      body.off('end', done).off('close', done).off('error', done).off('data', count);
      resolve();
    };
    const timer = setTimeout(done, ms);
    body.on('end', done).on('close', done).on('error', done).on('data', count);
    // A reader that stopped early (an async iterator) leaves a 'readable' listener, which keeps the stream from flowing.
    body.removeAllListeners('readable');
    body.resume();
  });
}

export interface ApiDeps {
  cfg: DaemonConfig;
  mgr: SandboxManager;
  /** Whether the daemon can create sandboxes now, and if not why. */
  readiness: () => { ready: boolean; reason?: string; runtimes: Record<string, string> };
  version: string;
  /** OCI image store (pull, import, ls, rm, prune); absent in daemons built without it. */
  images?: ImageStore;
  /** The network capability's own surface (defaults, SDK callbacks, port proxying); absent without it. */
  net?: NetworkService;
  /** Prometheus metrics for GET /metrics; absent with --metrics off. */
  metrics?: RequestObserver & { contentType(): string; text(): Promise<string> };
  /** Where the one line per request goes; absent with --request-log off. */
  logger?: Logger;
  /** Templates built from Dockerfiles; absent in daemons built without them. */
  templates?: TemplateDeps;
  /** Named volumes; absent in daemons built without them. */
  volumes?: VolumeManager;
}

export type TypedApp = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, ZodTypeProvider>;

function errorBody(err: CordonError) {
  return err.toJSON();
}

/** Fastify validation failures become 400s that name the field and say what is wrong with it. */
function validationMessage(err: FastifyError): string {
  const where = (err as { validationContext?: string }).validationContext ?? 'body';
  return (err.validation ?? [])
    .map((v) => {
      const field = [where, ...String(v.instancePath ?? '').split('/').filter(Boolean)].join('.');
      return `${field}: ${v.message}`;
    })
    .join('; ');
}

export async function buildServer(deps: ApiDeps): Promise<FastifyInstance> {
  const app = Fastify({
    bodyLimit: deps.cfg.bodyLimitBytes,
    ...(deps.logger ? { loggerInstance: deps.logger } : { logger: false }),
    disableRequestLogging: true,
    genReqId: requestId,
    requestIdHeader: false,
    forceCloseConnections: true,
  }) as unknown as FastifyInstance;
  registerRequestLog(app, { log: deps.logger, observer: deps.metrics });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  // Uploads stream straight through to the sandbox; nothing buffers them in memory.
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));

  app.setErrorHandler(async (err: FastifyError, req, reply) => {
    // A request refused before its body was read (too large, failed midway) still has bytes in flight.
    // A modest body (a known size, or a chunked one that ends within the bound) is read and discarded
    // before the answer, so the client has finished sending when it reads it (an answer mid-upload races
    // the client into a reset); past the bound the rest is swallowed while the answer goes out on a
    // connection that is then closed.
    if (!req.raw.complete) {
      const length = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length']);
      const modest = length === undefined || (length > 0 && length <= DRAIN_REFUSED_BODY_MAX);
      if (modest && !req.raw.destroyed) await drained(req.raw, DRAIN_REFUSED_BODY_MS, DRAIN_REFUSED_BODY_MAX);
      if (!req.raw.complete) {
        req.raw.resume();
        reply.header('connection', 'close');
      }
    }
    let e: CordonError;
    if (err instanceof CordonError) e = err;
    else if (err.validation) e = new CordonError('invalid_argument', validationMessage(err));
    else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      e = new CordonError('payload_too_large', `request body is larger than ${deps.cfg.bodyLimitBytes} bytes; send file contents with PUT .../files/content instead`);
    } else if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') e = new CordonError('invalid_argument', `unsupported Content-Type; send application/json (or application/octet-stream for file contents)`);
    else if (err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || err.statusCode === 400) e = new CordonError('invalid_argument', `malformed request: ${err.message}`);
    else e = new CordonError('internal', `internal error: ${err.message}`);
    if (reply.sent || reply.raw.headersSent) {
      reply.raw.destroy();
      return reply;
    }
    const retryAfter = retryAfterSeconds(e);
    if (retryAfter) reply.header('retry-after', String(retryAfter));
    return reply.status(e.status).send(errorBody(e));
  });
  app.setNotFoundHandler((req, reply) => {
    reply.status(404).send(new CordonError('not_found', `no route ${req.method} ${req.url.split('?')[0]}; see GET /v1/openapi.json`).toJSON());
  });

  await registerE2b(app, deps, new SandboxPortProxy(deps.net, deps.cfg.apiKey)); // before the API-key hook: sandbox-bound requests carry envd tokens
  if (deps.cfg.apiKey) {
    const key = deps.cfg.apiKey;
    app.addHook('onRequest', async (req, reply) => {
      if (req.url === '/v1/health' || req.url.startsWith('/v1/openapi')) return;
      // E2B's volume content API authenticates with the volume's own token (checked by its routes).
      if (req.url.startsWith('/volumecontent/')) return;
      // E2B template file uploads carry their own signature (checked by their route).
      if (req.url.startsWith(UPLOAD_PREFIX)) return;
      if (!apiKeyMatches(req, key)) {
        reply.status(401).send(new CordonError('unauthenticated', 'missing or wrong API key; set CORDON_API_KEY (sent as Authorization: Bearer KEY)').toJSON());
      }
    });
  }

  await app.register(swagger, {
    openapi: { info: { title: 'cordon', version: deps.version, description: 'Sandboxes for untrusted code' }, components: { securitySchemes: { apiKey: { type: 'http', scheme: 'bearer' } } } },
    transform: jsonSchemaTransform,
  });
  await app.register(websocket, { options: { maxPayload: 16 * 1024 * 1024 } });

  const typed = app.withTypeProvider<ZodTypeProvider>();
  registerSystemRoutes(typed, deps, () => app.swagger());
  registerSandboxRoutes(typed, deps);
  registerNetworkRoutes(typed, deps);
  registerProcessRoutes(typed, deps);
  registerFileRoutes(typed, deps);
  registerImageRoutes(typed, deps);
  registerMetricsRoute(typed, deps);
  registerTemplateRoutes(typed, deps);
  registerVolumeRoutes(typed, deps);
  registerSnapshotRoutes(typed, deps);
  registerMcpRoute(typed, deps);
  return app;
}
