import { CordonError } from '../../errors/registry.js';
import { formatBytes } from '../../util/units.js';

// What one layer (or one import archive) may hold, and the two ways a layer is refused: it is unsafe
// (its names would act outside its directory) or it is larger than the daemon allows.

export interface LayerLimits {
  /** Bytes of tar a layer may hold once decompressed (`cordon serve --max-layer-size`). */
  maxBytes: number;
  /** Tar entries a layer may hold (`cordon serve --max-layer-entries`). */
  maxEntries: number;
}

/**
 * 16 GiB: the largest layers of common public images (CUDA and ML framework bases) are a few GiB
 * uncompressed; this leaves room for them and still stops a compression bomb long before a disk fills.
 * One million entries: big real layers hold a few hundred thousand; the unpacker keeps a little memory
 * per directory until the layer ends, so the count also bounds that.
 */
export const DEFAULT_LAYER_LIMITS: LayerLimits = { maxBytes: 16 * 1024 ** 3, maxEntries: 1_000_000 };

/** The layer's names would act outside its directory, or make no sense as a filesystem. */
export class UnsafeLayerError extends Error {}

/** The layer is past one of the daemon's limits; `limit` says which. */
export class LayerTooLargeError extends Error {
  constructor(readonly limit: 'bytes' | 'entries', readonly max: number, what = 'layer', message?: string) {
    super(message ?? (limit === 'bytes' ? `${what} holds more than ${formatBytes(max)} once decompressed` : `${what} holds more than ${max} entries`));
  }

  /** The `cordon serve` flag that sets the limit that was hit. */
  get flag(): string {
    return this.limit === 'bytes' ? '--max-layer-size' : '--max-layer-entries';
  }

  /** The 413 a client gets, naming the flag that sets the limit. */
  toCordonError(): CordonError {
    return new CordonError('payload_too_large', `${this.message}, past this daemon's limit (cordon serve ${this.flag}); use a smaller image or raise ${this.flag}. Nothing was kept`, { limit: this.flag, max: this.max });
  }
}
