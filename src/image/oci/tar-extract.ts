import tar from 'tar-stream';
import { UnsafeLayerError } from './layer-limits.js';

// tar-stream's extractor with two changes, made in a subclass so no other user of tar-stream is
// affected: pax values under SCHILY.xattr. stay bytes (tar-stream decodes every pax value as UTF-8,
// which mangles binary xattrs such as security.capability), and a pax or GNU long-name header may not
// be larger than MAX_META_BYTES (tar-stream buffers such a header whole in memory before parsing it).

export const XATTR_PREFIX = 'SCHILY.xattr.';
/** The same bound node-tar uses for its meta entries. */
export const MAX_META_BYTES = 1024 * 1024;

export type PaxRecords = Record<string, string | Buffer>;
export type LayerHeaders = Omit<tar.Headers, 'pax'> & { pax?: PaxRecords | null };

/** The parts of tar-stream 3's Extract this file relies on (checked at load below). */
interface ExtractInternals {
  _header: { type: string; size: number } | null;
  _longHeader: boolean;
  _pax: PaxRecords | null;
  _paxGlobal: PaxRecords | null;
  _consumeHeader(): boolean;
  _decodeLongHeader(buf: Buffer): void;
  _continueWrite(err: Error | null): void;
  destroy(err?: Error): void;
}

const Base = Object.getPrototypeOf(tar.extract()).constructor as new () => ExtractInternals;
for (const m of ['_consumeHeader', '_decodeLongHeader', '_continueWrite'] as const) {
  if (typeof (Base.prototype as unknown as Record<string, unknown>)[m] !== 'function') throw new Error(`tar-stream changed: Extract.${m} is missing; check src/image/oci/tar-extract.ts`);
}

/** Parse pax extended header records ("LEN key=value\n"); malformed records make the layer unsafe. */
export function parsePax(buf: Buffer): PaxRecords {
  const out: PaxRecords = {};
  let at = 0;
  while (at < buf.length) {
    if (buf[at] === 0) break; // NUL padding after the last record
    const sp = buf.indexOf(0x20, at);
    const lenText = sp === -1 ? '' : buf.toString('latin1', at, sp);
    const len = /^[1-9][0-9]{0,7}$/.test(lenText) ? Number(lenText) : NaN;
    if (!(len > 0) || at + len > buf.length || buf[at + len - 1] !== 0x0a) throw new UnsafeLayerError('layer has a malformed pax header record');
    const rec = buf.subarray(sp + 1, at + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw new UnsafeLayerError('layer has a pax header record without a key');
    const key = rec.subarray(0, eq).toString('utf8');
    const value = rec.subarray(eq + 1);
    out[key] = key.startsWith(XATTR_PREFIX) ? Buffer.from(value) : value.toString('utf8');
    at += len;
  }
  if (out.size !== undefined && !/^[0-9]{1,15}$/.test(String(out.size))) throw new UnsafeLayerError('layer has a pax size that is not a number');
  return out;
}

class LayerExtract extends Base {
  _consumeHeader(): boolean {
    const ok = super._consumeHeader();
    if (this._longHeader && this._header && this._header.size > MAX_META_BYTES) {
      const err = new UnsafeLayerError(`layer has a ${this._header.type} of ${this._header.size} bytes (at most ${MAX_META_BYTES} are accepted)`);
      this.destroy(err);
      this._continueWrite(err);
      return false;
    }
    return ok;
  }

  _decodeLongHeader(buf: Buffer): void {
    const type = this._header?.type;
    if (type === 'pax-header') this._pax = { ...(this._paxGlobal ?? {}), ...parsePax(buf) };
    else if (type === 'pax-global-header') this._paxGlobal = parsePax(buf);
    else super._decodeLongHeader(buf);
  }
}

/** A tar extractor for one layer; its entries' `pax` keeps xattr values as Buffers. */
export function layerExtract(): tar.Extract {
  return new LayerExtract() as unknown as tar.Extract;
}
