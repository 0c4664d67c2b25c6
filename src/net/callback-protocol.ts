// The wire protocol of SDK-side interception callbacks, shared by the daemon (src/net/callbacks.ts)
// and the SDK (src/sdk/callbacks.ts): the daemon sends a CallbackRequest, the client answers with a
// CallbackDecision for the same id.

export interface CallbackSummary {
  phase: 'before' | 'after';
  rule?: string;
  method: string;
  host: string;
  path: string;
  query: string;
  headers: Record<string, string | string[] | undefined>;
  /** Phase after only. */
  status?: number;
  response_headers?: Record<string, string | string[] | undefined>;
}

export interface CallbackRequest extends CallbackSummary {
  id: number;
  timeout_ms: number;
}

export interface CallbackDecision {
  action: 'allow' | 'block' | 'mutate';
  reason?: string;
  set_headers?: Record<string, string>;
  delete_headers?: string[];
  set_query?: Record<string, string>;
  delete_query?: string[];
  rewrite_path?: string;
  set_response_headers?: Record<string, string>;
  delete_response_headers?: string[];
}
