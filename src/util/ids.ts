import { randomBytes } from 'node:crypto';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** URL-safe lowercase alphanumeric id; the first character is a letter so it is never read as a number. */
export function newId(length = 20): string {
  const bytes = randomBytes(length);
  let out = ALPHABET[bytes[0] % 26];
  for (let i = 1; i < length; i++) out += ALPHABET[bytes[i] % ALPHABET.length];
  return out;
}

export const SANDBOX_ID_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;

export function newToken(): string {
  return randomBytes(24).toString('base64url');
}
