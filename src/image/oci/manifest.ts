import { z } from 'zod';
import { CordonError } from '../../errors/registry.js';
import type { ImageConfig } from '../../engine/types.js';

// The JSON documents of the OCI image spec and Docker's v2 schema 2, validated before use.

export const MEDIA = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;
export const MANIFEST_ACCEPT = Object.values(MEDIA).join(', ');

const digest = z.string().regex(/^sha256:[a-f0-9]{64}$/, 'digests must be sha256');
const descriptor = z.object({
  mediaType: z.string().max(255).optional(),
  digest,
  size: z.number().int().min(0).max(2 ** 50),
  platform: z.object({ os: z.string(), architecture: z.string(), variant: z.string().optional() }).passthrough().optional(),
}).passthrough();
export type Descriptor = z.infer<typeof descriptor>;

export const manifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  config: descriptor,
  layers: z.array(descriptor).max(500),
}).passthrough();
export type Manifest = z.infer<typeof manifestSchema>;

export const indexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  manifests: z.array(descriptor).max(1000),
}).passthrough();
export type Index = z.infer<typeof indexSchema>;

const strList = z.array(z.string()).nullish();
export const configSchema = z.object({
  architecture: z.string().optional(),
  os: z.string().optional(),
  config: z.object({
    Env: strList,
    Entrypoint: strList,
    Cmd: strList,
    WorkingDir: z.string().nullish(),
    User: z.string().nullish(),
  }).passthrough().nullish(),
  rootfs: z.object({ type: z.literal('layers'), diff_ids: z.array(digest).max(500) }),
}).passthrough();
export type OciConfig = z.infer<typeof configSchema>;

/** Parse a document or fail with a message naming what it was. */
export function parseDoc<T>(schema: z.ZodType<T>, bytes: Buffer, what: string): T {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new CordonError('invalid_argument', `${what} is not valid JSON`);
  }
  const r = schema.safeParse(json);
  if (!r.success) throw new CordonError('invalid_argument', `${what} is not a valid image document: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return r.data;
}

export function isIndex(mediaType: string | undefined, json: Record<string, unknown>): boolean {
  return mediaType === MEDIA.ociIndex || mediaType === MEDIA.dockerList || (!mediaType && Array.isArray(json.manifests));
}

/** The platform this host runs: images are picked for it from multi-arch indexes. */
export function hostPlatform(): { os: string; architecture: string } {
  const arch = ({ x64: 'amd64', arm64: 'arm64', arm: 'arm', s390x: 's390x', ppc64: 'ppc64le', riscv64: 'riscv64' } as Record<string, string>)[process.arch] ?? process.arch;
  return { os: 'linux', architecture: arch };
}

export function pickPlatform(index: Index, what: string): Descriptor {
  const want = hostPlatform();
  const match = index.manifests.find((m) => m.platform?.os === want.os && m.platform?.architecture === want.architecture);
  if (!match) {
    const have = index.manifests.map((m) => (m.platform ? `${m.platform.os}/${m.platform.architecture}` : 'unknown')).join(', ');
    throw new CordonError('not_found', `${what} has no ${want.os}/${want.architecture} image (it has: ${have || 'none'})`);
  }
  return match;
}

/** What a sandbox takes from the image config, the way Docker reads it. */
export function imageConfigOf(c: OciConfig): ImageConfig {
  const cc = c.config ?? {};
  return {
    env: cc.Env ?? [],
    workdir: cc.WorkingDir || undefined,
    user: cc.User || undefined,
    entrypoint: cc.Entrypoint?.length ? cc.Entrypoint : undefined,
    cmd: cc.Cmd?.length ? cc.Cmd : undefined,
  };
}

export function checkPlatform(c: OciConfig, what: string): void {
  const want = hostPlatform();
  if (c.os && c.os !== want.os) throw new CordonError('invalid_argument', `${what} is for ${c.os}, this host runs ${want.os}`);
  if (c.architecture && c.architecture !== want.architecture) {
    throw new CordonError('invalid_argument', `${what} is for ${c.architecture}, this host runs ${want.architecture}`);
  }
}
