// Bounded reads of sandbox files through the SDK: never more than asked is held, and the download
// is cut (its stream destroyed) as soon as enough has arrived.
import { CordonError } from '../errors/registry.js';
import type { Cordon } from '../sdk/client.js';
import type { FileInfo } from '../sdk/types.js';

export interface BoundedRead {
  info: FileInfo;
  data: Buffer;
  /** Whether the file holds bytes past the ones returned. */
  more: boolean;
}

/** Bytes [offset, offset + max) of a regular file. */
export async function readBounded(cordon: Cordon, id: string, path: string, offset: number, max: number): Promise<BoundedRead> {
  const files = cordon.sandbox(id).files;
  const info = await files.stat(path);
  if (info.type === 'dir') throw new CordonError('invalid_argument', `${path} is a directory; list it with list_files`, { path });
  const stop = new AbortController();
  const stream = await files.readStream(path, { signal: stop.signal });
  const kept: Buffer[] = [];
  let keptBytes = 0;
  let pos = 0;
  let more = false;
  try {
    for await (const c of stream as AsyncIterable<Buffer>) {
      const from = Math.max(0, offset - pos);
      pos += c.length;
      if (from >= c.length) continue;
      const take = c.subarray(from, from + (max - keptBytes));
      kept.push(Buffer.from(take));
      keptBytes += take.length;
      if (take.length < c.length - from) {
        more = true;
        break;
      }
      if (keptBytes >= max) {
        // One more byte tells whether the file goes on; reading it costs at most one chunk.
        more = pos < info.size;
        break;
      }
    }
  } catch (e) {
    if (!stop.signal.aborted) throw new CordonError('unavailable', `reading ${path} broke off (${(e as Error).message}); retry`);
  } finally {
    stop.abort();
    stream.destroy();
  }
  return { info, data: Buffer.concat(kept), more };
}

/** Text when the bytes are UTF-8 without NULs (what a model can read); otherwise undefined. */
export function asText(data: Buffer): string | undefined {
  if (data.includes(0)) return undefined;
  const text = data.toString('utf8');
  return text.includes('\uFFFD') && !data.includes(Buffer.from('\uFFFD')) ? undefined : text;
}

/** The resource URI of a sandbox file: cordon://sandboxes/ID/files/PATH, each path segment percent-encoded. */
export function fileUri(id: string, path: string): string {
  const segments = path.split('/').filter(Boolean).map(encodeURIComponent);
  return `cordon://sandboxes/${encodeURIComponent(id)}/files/${segments.join('/')}`;
}

/** Decode a variable matched from a resource URI; a malformed escape is the caller's error. */
export function uriPart(value: string | string[] | undefined, what: string): string {
  const v = Array.isArray(value) ? value.join('/') : (value ?? '');
  try {
    return decodeURIComponent(v);
  } catch {
    throw new CordonError('invalid_argument', `${what} in the resource URI has a malformed %-escape; build it as cordon://sandboxes/ID/files/PATH`);
  }
}
