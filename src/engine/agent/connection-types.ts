// What an agent connection offers its users (agent-connection.ts is the mechanism): the request and
// channel shapes, the hooks it calls, and the errors a request can end with.
import type { z } from 'zod';
import { CordonError } from '../../errors/registry.js';
import type { AgentError, Hello, exitMessage, watchEvents } from './messages.js';

export type Json = Record<string, unknown>;

/** The error of a request the agent answered with an errno. */
export class AgentOpError extends Error {
  override name = 'AgentOpError';
  constructor(readonly errno: string, message: string) {
    super(message);
  }
}

export interface InboundHandlers {
  data(chunk: Buffer): void;
  eof(): void;
  error(e: AgentError): void;
  /** The connection ended before the stream did. */
  lost?(reason: string): void;
}

/** Bytes from the agent on one channel; `ack` grants it `window` bytes past the offset. */
export interface InboundChannel {
  readonly id: number;
  ack(offset: number): void;
  close(): void;
}

/** Bytes to the agent on one channel, never more than it granted. */
export interface OutboundChannel {
  readonly id: number;
  /** Resolves once the chunk is on its way (after waiting for credit). */
  write(chunk: Buffer): Promise<void>;
  end(): void;
  close(): void;
}

export interface EventHandlers {
  events(evs: z.infer<typeof watchEvents>['events']): void;
  error(e: AgentError): void;
  lost?(reason: string): void;
}

/** Why a connection ended: the peer hung up (or the daemon did), it broke the protocol, or it stopped answering. */
export type CloseKind = 'closed' | 'violation' | 'hung';

export interface ConnectionHooks {
  hello(h: Hello): void;
  exit(m: z.infer<typeof exitMessage>): void;
  closed(reason: string, kind: CloseKind): void;
}

export function unavailable(message: string): CordonError {
  return new CordonError('unavailable', message);
}
