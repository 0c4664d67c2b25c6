// E2B's sandbox list order and keyset paging: newest first by default, `order=asc` the exact reverse,
// and a next token that encodes the position and the order it was issued for.
import type { SandboxRecord } from '../../engine/types.js';
import { CordonError } from '../../errors/registry.js';

export type ListOrder = 'asc' | 'desc';

const startedAt = (r: SandboxRecord) => r.startedAt ?? r.createdAt;

/** desc: started DESC, id ASC; asc: started ASC, id DESC (so one order is the other reversed). */
function compare(order: ListOrder) {
  return (a: SandboxRecord, b: SandboxRecord) => {
    const byTime = order === 'asc' ? startedAt(a) - startedAt(b) : startedAt(b) - startedAt(a);
    if (byTime) return byTime;
    const byId = a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    return order === 'asc' ? -byId : byId;
  };
}

/** "TIME__ID" for descending, "TIME__ID__asc" for ascending, base64url (E2B's cursor shape). */
function token(r: SandboxRecord, order: ListOrder): string {
  return Buffer.from(`${new Date(startedAt(r)).toISOString()}__${r.id}${order === 'asc' ? '__asc' : ''}`).toString('base64url');
}

/** Keeps what comes strictly after the token's position in the order it was issued for. */
function after(nextToken: string, order: ListOrder): (r: SandboxRecord) => boolean {
  const parts = Buffer.from(nextToken, 'base64url').toString().split('__');
  const at = Date.parse(parts[0] ?? '');
  if (parts.length < 2 || parts.length > 3 || Number.isNaN(at) || (parts.length === 3 && parts[2] !== 'asc')) {
    throw new CordonError('invalid_argument', 'nextToken: not a token this server issued; pass back the x-next-token header value');
  }
  if ((parts.length === 3 ? 'asc' : 'desc') !== order) {
    throw new CordonError('invalid_argument', `nextToken: it was issued for the other sort order; page with the same order as the first request`);
  }
  const id = parts[1];
  const probe = { id, startedAt: at, createdAt: at } as SandboxRecord;
  const cmp = compare(order);
  return (r) => cmp(r, probe) > 0;
}

/** One page of `recs` in `order`, and the token for the next page when there is more. */
export function sandboxPage(recs: SandboxRecord[], q: { order: ListOrder; limit: number; nextToken?: string }): { items: SandboxRecord[]; nextToken?: string } {
  let sorted = [...recs].sort(compare(q.order));
  if (q.nextToken) sorted = sorted.filter(after(q.nextToken, q.order));
  const items = sorted.slice(0, q.limit);
  return { items, nextToken: sorted.length > q.limit ? token(items[items.length - 1], q.order) : undefined };
}
