import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Constant-time API-key check; the key may come as a Bearer token or an X-API-Key header. */
export function apiKeyMatches(req: FastifyRequest, key: string): boolean {
  const auth = req.headers.authorization;
  const given = (typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7) : undefined) ?? req.headers['x-api-key'];
  if (typeof given !== 'string') return false;
  return timingSafeEqual(digest(given), digest(key));
}
