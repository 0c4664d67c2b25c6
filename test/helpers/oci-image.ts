import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';

// Builds small OCI images from scratch for the tests: a busybox-static rootfs plus crafted layers
// (whiteouts, hard links, devices, xattrs), each layer gzip, zstd or plain.

export interface Entry {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'fifo';
  content?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  pax?: Record<string, string>;
}

export type Compression = 'gzip' | 'zstd' | 'none';

export async function layerTar(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise((r) => pack.on('end', r));
  for (const e of entries) {
    const type = e.type ?? 'file';
    const content = e.content === undefined ? undefined : Buffer.from(e.content);
    await new Promise<void>((resolve, reject) =>
      pack.entry(
        { name: e.name, type, mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644), uid: e.uid ?? 0, gid: e.gid ?? 0, linkname: e.linkname, devmajor: e.devmajor, devminor: e.devminor, pax: e.pax, mtime: new Date(1_700_000_000_000) } as tar.Headers,
        type === 'file' ? content ?? Buffer.alloc(0) : undefined,
        (err) => (err ? reject(err) : resolve()),
      ),
    );
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

export function compress(buf: Buffer, how: Compression): Buffer {
  if (how === 'gzip') return gzipSync(buf);
  if (how === 'zstd') {
    const r = spawnSync('zstd', ['-q', '-c', '-3'], { input: buf, maxBuffer: 1 << 30 });
    if (r.status !== 0) throw new Error(`zstd failed: ${r.stderr}`);
    return r.stdout;
  }
  return buf;
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const MT = { gzip: 'application/vnd.oci.image.layer.v1.tar+gzip', zstd: 'application/vnd.oci.image.layer.v1.tar+zstd', none: 'application/vnd.oci.image.layer.v1.tar' };

export interface ImageSpec {
  layers: { tar: Buffer; compression: Compression }[];
  config: { Env?: string[]; Entrypoint?: string[]; Cmd?: string[]; WorkingDir?: string; User?: string };
  architecture?: string;
}

export interface Built {
  manifestDigest: string;
  configDigest: string;
  layerDigests: string[];
}

function putBlob(dir: string, data: Buffer): { digest: string; size: number } {
  const digest = sha(data);
  writeFileSync(join(dir, 'blobs', 'sha256', digest.slice(7)), data);
  return { digest, size: data.length };
}

function writeImage(dir: string, spec: ImageSpec): Built & { desc: { mediaType: string; digest: string; size: number } } {
  const blobs = spec.layers.map((l) => ({ ...putBlob(dir, compress(l.tar, l.compression)), mediaType: MT[l.compression] }));
  const config = { architecture: spec.architecture ?? 'amd64', os: 'linux', config: spec.config, rootfs: { type: 'layers', diff_ids: spec.layers.map((l) => sha(l.tar)) }, created: '2024-01-01T00:00:00Z' };
  const cfg = putBlob(dir, Buffer.from(JSON.stringify(config)));
  const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg }, layers: blobs };
  const m = putBlob(dir, Buffer.from(JSON.stringify(manifest)));
  return { manifestDigest: m.digest, configDigest: cfg.digest, layerDigests: blobs.map((b) => b.digest), desc: { mediaType: manifest.mediaType, ...m } };
}

/** Write an OCI layout holding one image, or (with `others`) an index of several platforms. */
export function writeLayout(dir: string, spec: ImageSpec, opts: { refName?: string; others?: ImageSpec[] } = {}): Built {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const main = writeImage(dir, spec);
  const ann = opts.refName ? { annotations: { 'org.opencontainers.image.ref.name': opts.refName } } : {};
  let top: object = { ...main.desc, ...ann };
  if (opts.others) {
    const all = [{ ...main.desc, platform: { os: 'linux', architecture: spec.architecture ?? 'amd64' } }, ...opts.others.map((o) => ({ ...writeImage(dir, o).desc, platform: { os: 'linux', architecture: o.architecture! } }))];
    const idx = putBlob(dir, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: all })));
    top = { mediaType: 'application/vnd.oci.image.index.v1+json', ...idx, ...ann };
  }
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [top] }));
  return main;
}

/** Push a layout to a registry with skopeo (all platforms when it is an index). */
export function push(layout: string, dest: string, opts: { auth?: { username: string; password: string }; all?: boolean } = {}): void {
  const args = ['copy', '--quiet', '--dest-tls-verify=false', ...(opts.all ? ['--all'] : []), ...(opts.auth ? ['--dest-creds', `${opts.auth.username}:${opts.auth.password}`] : []), `oci:${layout}`, `docker://${dest}`];
  const r = spawnSync('skopeo', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`skopeo ${args.join(' ')} failed: ${r.stderr}`);
}

/** `docker save`-style archive of a layout, via skopeo's docker-archive transport. */
export function dockerArchive(layout: string, file: string, name: string): void {
  rmSync(file, { force: true });
  const r = spawnSync('skopeo', ['copy', '--quiet', `oci:${layout}`, `docker-archive:${file}:${name}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`skopeo docker-archive failed: ${r.stderr}`);
}

const BUSYBOX = '/bin/busybox';
const APPLETS = ['sh', 'cat', 'ls', 'id', 'pwd', 'env', 'echo', 'stat', 'getfattr', 'test', 'sleep', 'readlink'];

/** A tiny Linux userland: busybox-static and a passwd with root and app (1000). */
export function baseEntries(): Entry[] {
  return [
    { name: 'bin', type: 'directory' },
    { name: 'bin/busybox', content: readFileSync(BUSYBOX), mode: 0o755 },
    ...APPLETS.map((a) => ({ name: `bin/${a}`, type: 'symlink' as const, linkname: 'busybox' })),
    { name: 'etc', type: 'directory' },
    { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' },
    { name: 'etc/group', content: 'root:x:0:\napp:x:1000:\n' },
    { name: 'etc/old.txt', content: 'to be whited out\n' },
    { name: 'data', type: 'directory' },
    { name: 'data/a.txt', content: 'hidden by an opaque dir\n' },
    { name: 'home', type: 'directory' },
    { name: 'home/app', type: 'directory', uid: 1000, gid: 1000 },
    { name: 'tmp', type: 'directory', mode: 0o1777 },
    { name: 'root', type: 'directory', mode: 0o700 },
  ];
}

/** The app layer: whiteout, opaque dir, hard link, setuid, xattr, device node and an entrypoint script. */
export function appEntries(): Entry[] {
  return [
    { name: 'etc/.wh.old.txt' },
    { name: 'data/.wh..wh..opq' },
    { name: 'data/b.txt', content: 'new\n' },
    { name: 'app', type: 'directory' },
    { name: 'app/run.sh', content: '#!/bin/sh\necho "args:$*"\necho "uid:$(id -u)"\necho "pwd:$(pwd)"\necho "greeting:$GREETING"\n', mode: 0o755 },
    { name: 'app/hello.txt', content: 'hello\n', pax: { 'SCHILY.xattr.user.origin': 'cordon-test' } },
    { name: 'app/hello-link.txt', type: 'link', linkname: 'app/hello.txt' },
    { name: 'app/suid', content: 'x', mode: 0o4755 },
    { name: 'app/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
  ];
}

export const APP_CONFIG = { Env: ['PATH=/bin', 'GREETING=hi from image'], Entrypoint: ['/app/run.sh'], Cmd: ['default-arg'], WorkingDir: '/app', User: 'app' };
