import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, realpath, stat } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { CordonError } from '../../errors/registry.js';
import { decompressed } from './decompress.js';
import type { ImageRecord } from './image-db.js';
import { LayerTooLargeError } from './layer-limits.js';
import type { LayerStore } from './layer-store.js';
import { checkPlatform, configSchema, indexSchema, isIndex, manifestSchema, parseDoc, pickPlatform } from './manifest.js';
import { checkLayers, fetchLayers } from './puller.js';
import type { Progress } from './progress.js';
import { formatReference, parseReference } from './reference.js';
import { unpackLayer } from './unpack.js';

// `docker save` archives and OCI image layouts, as a tar file (optionally compressed) or a directory.

const MAX_DOC = 8 * 1024 * 1024;
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A file inside the import directory; refuses paths (or symlinks) that lead out of it. */
async function inside(dir: string, rel: string): Promise<string> {
  if (!rel || rel.startsWith('/') || rel.split('/').includes('..')) throw new CordonError('invalid_argument', `archive names a path outside itself: ${rel}`);
  const real = await realpath(join(dir, rel)).catch(() => {
    throw new CordonError('invalid_argument', `archive is missing ${rel}`);
  });
  if (real !== dir && !real.startsWith(dir + sep)) throw new CordonError('invalid_argument', `archive path ${rel} leads outside the archive`);
  // An archive can carry FIFOs and devices: opening one would block a thread or touch a host device.
  if (!(await stat(real)).isFile()) throw new CordonError('invalid_argument', `archive member ${rel} is not a regular file`);
  return real;
}

async function readDoc(dir: string, rel: string): Promise<Buffer> {
  const p = await inside(dir, rel);
  if ((await stat(p)).size > MAX_DOC) throw new CordonError('invalid_argument', `${rel} is larger than ${MAX_DOC} bytes`);
  return readFile(p);
}

const blobPath = (digest: string) => `blobs/${digest.replace(':', '/')}`;

const saveManifest = z.array(z.object({ Config: z.string(), RepoTags: z.array(z.string()).nullish(), Layers: z.array(z.string()).max(500) }).passthrough()).min(1).max(100);

/**
 * Extract an archive file into `into` (confined like a layer), then import that directory. No member
 * may be larger than a layer may be, and decompressing may not produce more than that limit or the
 * archive's own size, whichever is larger: a plain tar is never held back by it, a compressed one
 * cannot blow up past the limit.
 */
export async function importFile(file: string, into: string, opts: ImportOptions): Promise<ImageRecord[]> {
  await mkdir(into, { recursive: true, mode: 0o700 });
  opts.progress.status(`reading ${file}`);
  const { maxBytes, maxEntries } = opts.layers.limits;
  const input = decompressed(createReadStream(file), { maxBytes: Math.max(maxBytes, (await stat(file)).size), what: `archive ${file}` });
  await unpackLayer(input, into, { maxEntries, maxFileBytes: maxBytes, what: `archive ${file}` }).catch((e: Error) => {
    if (e instanceof LayerTooLargeError) throw e.toCordonError();
    throw e instanceof CordonError ? e : new CordonError('invalid_argument', `${file} is not a readable image archive (docker save tar or OCI layout tar): ${e.message}`);
  });
  return importDir(into, opts);
}

export interface ImportOptions {
  layers: LayerStore;
  progress: Progress;
  /** Name for the first image, overriding what the archive says. */
  name?: string;
}

export async function importDir(dirIn: string, opts: ImportOptions): Promise<ImageRecord[]> {
  const dir = await realpath(dirIn);
  const has = (rel: string) => stat(join(dir, rel)).then(() => true, () => false);
  if (await has('manifest.json')) return importDockerSave(dir, opts);
  if (await has('index.json')) return importOciLayout(dir, opts);
  throw new CordonError('invalid_argument', 'not an image archive: expected manifest.json (docker save) or index.json (OCI layout)');
}

function nameFor(given: string | undefined, fallback: string | undefined, id: string): string {
  const n = given ?? fallback;
  return n ? formatReference(parseReference(n)) : id;
}

async function importDockerSave(dir: string, opts: ImportOptions): Promise<ImageRecord[]> {
  const list = parseDoc(saveManifest, await readDoc(dir, 'manifest.json'), 'manifest.json');
  const out: ImageRecord[] = [];
  for (const [i, entry] of list.entries()) {
    const configBytes = await readDoc(dir, entry.Config);
    const config = parseDoc(configSchema, configBytes, entry.Config);
    checkPlatform(config, entry.Config);
    if (entry.Layers.length !== config.rootfs.diff_ids.length) throw new CordonError('invalid_argument', `${entry.Config}: ${entry.Layers.length} layers but ${config.rootfs.diff_ids.length} diff IDs`);
    const layers = await Promise.all(
      entry.Layers.map(async (rel, j) => {
        const p = await inside(dir, rel);
        return { digest: config.rootfs.diff_ids[j], diffId: config.rootfs.diff_ids[j], size: (await stat(p)).size, open: async () => ({ stream: createReadStream(p) }) };
      }),
    );
    // docker save layers are named by path, not digest; the diff ID check covers their content.
    await fetchLayers(opts.layers, layers, opts.progress, false);
    const id = sha(configBytes);
    const names = i === 0 && opts.name ? [opts.name] : entry.RepoTags?.length ? entry.RepoTags : [undefined];
    for (const n of names) {
      out.push({ name: nameFor(n, undefined, id), id, digest: id, manifest: JSON.stringify(entry), config: configBytes.toString('utf8'), layers: layers.map(({ digest, diffId, size }) => ({ digest, diffId, size })), size: layers.reduce((a, l) => a + l.size, 0), source: 'import', createdAt: Date.now() });
    }
  }
  return out;
}

async function importOciLayout(dir: string, opts: ImportOptions): Promise<ImageRecord[]> {
  const indexBytes = await readDoc(dir, 'index.json');
  const index = parseDoc(indexSchema, indexBytes, 'index.json');
  const out: ImageRecord[] = [];
  for (const [i, desc] of index.manifests.entries()) {
    let mdesc = desc;
    let bytes = await readDoc(dir, blobPath(desc.digest));
    if (sha(bytes) !== desc.digest) throw new CordonError('invalid_argument', `blob ${desc.digest} is corrupt: its content hashes to ${sha(bytes)}`);
    if (isIndex(desc.mediaType, JSON.parse(bytes.toString('utf8')))) {
      mdesc = pickPlatform(parseDoc(indexSchema, bytes, desc.digest), desc.digest);
      bytes = await readDoc(dir, blobPath(mdesc.digest));
      if (sha(bytes) !== mdesc.digest) throw new CordonError('invalid_argument', `blob ${mdesc.digest} is corrupt`);
    }
    const manifest = parseDoc(manifestSchema, bytes, mdesc.digest);
    const configBytes = await readDoc(dir, blobPath(manifest.config.digest));
    if (sha(configBytes) !== manifest.config.digest) throw new CordonError('invalid_argument', `config blob ${manifest.config.digest} is corrupt`);
    const config = parseDoc(configSchema, configBytes, manifest.config.digest);
    checkPlatform(config, mdesc.digest);
    checkLayers(manifest, config.rootfs.diff_ids, mdesc.digest);
    const layers = await Promise.all(
      manifest.layers.map(async (l, j) => {
        const p = await inside(dir, blobPath(l.digest));
        return { digest: l.digest, diffId: config.rootfs.diff_ids[j], size: l.size, mediaType: l.mediaType, open: async () => ({ stream: createReadStream(p) }) };
      }),
    );
    await fetchLayers(opts.layers, layers, opts.progress, true);
    const ann = (desc.annotations ?? {}) as Record<string, string>;
    const annotated = ann['io.containerd.image.name'] ?? (ann['org.opencontainers.image.ref.name']?.includes('/') ? ann['org.opencontainers.image.ref.name'] : undefined);
    const id = sha(configBytes);
    out.push({ name: nameFor(i === 0 ? opts.name : undefined, annotated, id), id, digest: mdesc.digest, manifest: bytes.toString('utf8'), config: configBytes.toString('utf8'), layers: layers.map(({ digest, diffId, size, mediaType }) => ({ digest, diffId, size, mediaType })), size: layers.reduce((a, l) => a + l.size, 0), source: 'import', createdAt: Date.now() });
  }
  return out;
}
