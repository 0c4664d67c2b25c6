// One registry of typed errors. Every surface maps a CordonError the same way:
// HTTP status for REST/E2B, a Connect code for envd, an exit code for the CLI.

export type ConnectCode =
  | 'invalid_argument' | 'unauthenticated' | 'permission_denied' | 'not_found'
  | 'already_exists' | 'failed_precondition' | 'resource_exhausted' | 'unavailable'
  | 'deadline_exceeded' | 'internal' | 'unimplemented' | 'canceled' | 'aborted';

interface ErrorKind {
  status: number;
  connect: ConnectCode;
  /** CLI exit code, following sysexits(3) so it never collides with common command codes. */
  exit: number;
}

export const ERROR_KINDS = {
  invalid_argument: { status: 400, connect: 'invalid_argument', exit: 64 },
  unauthenticated: { status: 401, connect: 'unauthenticated', exit: 77 },
  permission_denied: { status: 403, connect: 'permission_denied', exit: 77 },
  not_found: { status: 404, connect: 'not_found', exit: 66 },
  invalid_state: { status: 409, connect: 'failed_precondition', exit: 65 },
  already_exists: { status: 409, connect: 'already_exists', exit: 65 },
  sandbox_gone: { status: 410, connect: 'unavailable', exit: 69 },
  payload_too_large: { status: 413, connect: 'resource_exhausted', exit: 65 },
  too_many_sandboxes: { status: 429, connect: 'resource_exhausted', exit: 75 },
  rate_limited: { status: 429, connect: 'resource_exhausted', exit: 75 },
  insufficient_resources: { status: 503, connect: 'unavailable', exit: 69 },
  unavailable: { status: 503, connect: 'unavailable', exit: 69 },
  no_space: { status: 507, connect: 'resource_exhausted', exit: 73 },
  deadline_exceeded: { status: 504, connect: 'deadline_exceeded', exit: 124 },
  not_implemented: { status: 501, connect: 'unimplemented', exit: 70 },
  internal: { status: 500, connect: 'internal', exit: 70 },
} as const satisfies Record<string, ErrorKind>;

export type ErrorCode = keyof typeof ERROR_KINDS;

export class CordonError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'CordonError';
    this.code = code;
    this.details = details;
  }
  get status(): number {
    return ERROR_KINDS[this.code].status;
  }
  get connectCode(): ConnectCode {
    return ERROR_KINDS[this.code].connect;
  }
  get exitCode(): number {
    return ERROR_KINDS[this.code].exit;
  }
  toJSON() {
    return { code: this.code, message: this.message, ...(this.details ? { details: this.details } : {}) };
  }
}

/** Seconds a client should wait before retrying (sent as Retry-After), when the error is transient. */
export function retryAfterSeconds(e: unknown): number | undefined {
  const v = e instanceof CordonError ? e.details?.retry_after_s : undefined;
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : undefined;
}

export function isCordonError(e: unknown): e is CordonError {
  return e instanceof CordonError;
}

/** Look up the error code whose HTTP status matches; used by clients to rebuild typed errors. */
export function codeForStatus(status: number): ErrorCode {
  for (const [code, kind] of Object.entries(ERROR_KINDS)) if (kind.status === status) return code as ErrorCode;
  return status >= 500 ? 'internal' : 'invalid_argument';
}

export function exitCodeFor(code: string | undefined): number {
  return code && code in ERROR_KINDS ? ERROR_KINDS[code as ErrorCode].exit : 70;
}

// Shorthands used throughout the engine, each naming what to do next.
export const errors = {
  invalid: (field: string, what: string) =>
    new CordonError('invalid_argument', `${field}: ${what}`, { field }),
  sandboxNotFound: (id: string) =>
    new CordonError('not_found', `sandbox ${id} does not exist; list sandboxes with \`cordon ls\``, { sandbox_id: id }),
  processNotFound: (ref: string) =>
    new CordonError('not_found', `process ${ref} is not known in this sandbox; list them with GET .../processes`, { process: ref }),
  fileNotFound: (path: string) =>
    new CordonError('not_found', `path ${path} does not exist in the sandbox`, { path }),
  wrongState: (id: string, state: string, action: string, hint: string) =>
    new CordonError('invalid_state', `sandbox ${id} is ${state}; cannot ${action}. ${hint}`, { sandbox_id: id, state }),
  sandboxGone: (id: string, what: string) =>
    new CordonError('sandbox_gone', `${what}; the command's output and exit status are lost. Create a new sandbox to run it again`, { sandbox_id: id }),
  internal: (what: string) => new CordonError('internal', what),
};
