import { createHash } from 'node:crypto';
import { CordonError } from '../../errors/registry.js';
import type { Credentials } from './auth.js';
import type { ImageRecord, LayerRecord } from './image-db.js';
import type { LayerStore } from './layer-store.js';
import { checkPlatform, configSchema, indexSchema, isIndex, manifestSchema, parseDoc, pickPlatform, type Manifest } from './manifest.js';
import { Progress } from './progress.js';
import { formatReference, type ImageRef } from './reference.js';
import { RegistryClient } from './registry-client.js';

const MAX_CONFIG = 8 * 1024 * 1024;
const PARALLEL_LAYERS = 3;

/** Layer media types we can unpack (compression is sniffed, so the suffix is only a hint). */
export function isLayerType(mediaType: string | undefined): boolean {
  if (!mediaType) return true;
  return /^application\/vnd\.(oci\.image\.layer\.v1\.tar|docker\.image\.rootfs\.(diff|foreign\.diff)\.tar)(\+gzip|\+zstd|\.gzip)?$/.test(mediaType);
}

export function checkLayers(m: Manifest, diffIds: string[], what: string): void {
  if (m.layers.length !== diffIds.length) {
    throw new CordonError('invalid_argument', `${what}: the manifest lists ${m.layers.length} layers but the config ${diffIds.length}`);
  }
  for (const l of m.layers) if (!isLayerType(l.mediaType)) throw new CordonError('invalid_argument', `${what}: layer ${l.digest} has media type ${l.mediaType}, which is not a filesystem layer`);
}

/** Unpack layers a few at a time, reporting bytes per layer. */
export async function fetchLayers(layers: LayerStore, list: { digest: string; diffId: string; size: number; open: () => ReturnType<RegistryClient['blob']> }[], progress: Progress, verifyBlob: boolean): Promise<void> {
  for (const l of list) progress.add(l.digest, l.size, layers.has(l.diffId));
  progress.total();
  const queue = list.filter((l) => !layers.has(l.diffId));
  let failed: unknown;
  const worker = async () => {
    for (let l = queue.shift(); l && !failed; l = queue.shift()) {
      const item = l;
      try {
        await layers.ensure(item.diffId, { blobDigest: verifyBlob ? item.digest : undefined, open: item.open }, (n) => progress.bytes(item.digest, n));
        progress.done(item.digest);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: PARALLEL_LAYERS }, worker));
  if (failed) throw failed;
}

/** Pull one image from its registry into the layer store; returns the record to save. */
export async function pullImage(ref: ImageRef, opts: { layers: LayerStore; insecure: string[]; credentials?: Credentials; progress: Progress }): Promise<ImageRecord> {
  const name = formatReference(ref);
  const client = new RegistryClient(ref, { insecure: opts.insecure, credentials: opts.credentials });
  opts.progress.status(`resolving ${name}`);
  let top = await client.manifest(ref.digest ?? ref.tag!);
  let json = JSON.parse(top.bytes.toString('utf8')) as Record<string, unknown>;
  const mediaType = top.mediaType ?? (json.mediaType as string | undefined);
  if (isIndex(mediaType, json)) {
    const index = parseDoc(indexSchema, top.bytes, `index of ${name}`);
    const pick = pickPlatform(index, name);
    top = await client.manifest(pick.digest);
    json = JSON.parse(top.bytes.toString('utf8'));
  }
  const manifest = parseDoc(manifestSchema, top.bytes, `manifest of ${name}`);
  const configBytes = await client.blobBytes(manifest.config.digest, MAX_CONFIG);
  const config = parseDoc(configSchema, configBytes, `config of ${name}`);
  checkPlatform(config, name);
  checkLayers(manifest, config.rootfs.diff_ids, name);
  const recs: LayerRecord[] = manifest.layers.map((l, i) => ({ digest: l.digest, diffId: config.rootfs.diff_ids[i], size: l.size, mediaType: l.mediaType }));
  opts.progress.status(`pulling ${name} (${recs.length} layers)`);
  await fetchLayers(opts.layers, recs.map((l) => ({ ...l, open: () => client.blob(l.digest) })), opts.progress, true);
  return {
    name,
    id: `sha256:${createHash('sha256').update(configBytes).digest('hex')}`,
    digest: top.digest,
    manifest: top.bytes.toString('utf8'),
    config: configBytes.toString('utf8'),
    layers: recs,
    size: recs.reduce((a, l) => a + l.size, 0),
    source: 'pull',
    createdAt: Date.now(),
  };
}
