import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

const digest = (s: string) => createHash('sha256').update(s).digest();
const same = (given: unknown, key: string) => typeof given === 'string' && timingSafeEqual(digest(given), digest(key));

/**
 * Constant-time API-key check; the key may come as a Bearer token or an X-API-Key header (either one,
 * so a request to a sandbox port can carry the key in one and the app's own Authorization in the other).
 */
export function apiKeyMatches(req: { headers: IncomingHttpHeaders }, key: string): boolean {
  const auth = req.headers.authorization;
  const bearer = typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7) : undefined;
  return same(bearer, key) || same(req.headers['x-api-key'], key);
}
