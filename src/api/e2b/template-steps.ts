// E2B's template build request (TemplateBuildStartV2: a base, steps, start and ready commands) as a
// Dockerfile for cordon's builder. Every value the SDK sends is quoted so that the builder reads it
// back as exactly that value: RUN and COPY in the JSON form, ENV/WORKDIR/USER in double quotes.
import { posix } from 'node:path';
import { z } from 'zod';
import { CordonError } from '../../errors/registry.js';

export const FILES_HASH = /^[a-f0-9]{64}$/;
const MAX_ARG = 256 * 1024;

const step = z
  .object({
    type: z.string().min(1).max(32),
    args: z.array(z.string().max(MAX_ARG)).max(256).nullish(),
    filesHash: z.string().regex(FILES_HASH, 'filesHash: a sha256 hex digest, as the SDK computes it').nullish(),
    force: z.boolean().nullish(),
  })
  .passthrough();

export const buildStartBody = z
  .object({
    fromImage: z.string().max(512).nullish(),
    fromTemplate: z.string().max(256).nullish(),
    fromImageRegistry: z.unknown().optional(),
    force: z.boolean().nullish(),
    startCmd: z.string().max(65536).nullish(),
    readyCmd: z.string().max(65536).nullish(),
    steps: z.array(step).max(1000).nullish(),
  })
  .passthrough();

export type BuildStart = z.infer<typeof buildStartBody>;

/** The image an SDK Template() starts from when no from* is called; cordon's offline `base` stands in. */
export const E2B_DEFAULT_IMAGE = 'e2bdev/base';

export interface TranslatedBuild {
  dockerfile: string;
  /** The files hashes COPY steps need, each a directory of that name in the build context. */
  hashes: string[];
  /** Dockerfile instruction number (1-based, as the builder counts) → E2B step number (1-based). */
  stepOf: Map<number, number>;
  startCmd?: string;
  readyCmd?: string;
  noCache: boolean;
  /**
   * No step sets a workdir: E2B then starts the sandbox's commands in its user's home (a setUser('guest')
   * gives /home/guest), whatever WORKDIR the build ran in. From a template, the parent's choice carries over.
   */
  homeWorkdir: boolean;
}

const bad = (msg: string) => new CordonError('invalid_argument', msg);

/** A value the builder's word rules give back unchanged, or with $VAR expanded when `expand`. */
function quoted(v: string, expand = false): string {
  return `"${v.replace(expand ? /["\\]/g : /["\\$]/g, (c) => `\\${c}`)}"`;
}

/** Inside a JSON-form COPY, each string still goes through the word rules. */
function literal(v: string): string {
  return v.replace(/[\\'"$]/g, (c) => `\\${c}`);
}

function oneLine(v: string, what: string): string {
  if (/[\r\n\0]/.test(v)) throw bad(`${what}: must be one line without NUL`);
  return v;
}

function user(v: string, what: string): string {
  if (!v || /[\s\0]/.test(v) || v.length > 256) throw bad(`${what}: give one user (name, uid, user:group or uid:gid)`);
  return v;
}

/**
 * E2B's waitForPort asks `ss`, which a minimal image (cordon's base among them) may lack: the same
 * check from /proc/net (listening TCP, bound UDP), used when ss is not there.
 */
export function mapReadyCmd(cmd: string): string {
  const m = /^\[ -n "\$\(ss -Htuln sport = :(\d{1,5})\)" \]$/.exec(cmd.trim());
  if (!m || Number(m[1]) > 65535) return cmd;
  const hex = Number(m[1]).toString(16).toUpperCase().padStart(4, '0');
  const proc = `grep -Eqi '^ *[0-9]+: [0-9A-F]+:${hex} [0-9A-F]+:[0-9A-F]+ (0A|07) ' /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6 2>/dev/null`;
  return `if command -v ss >/dev/null 2>&1; then ${cmd.trim()}; else ${proc}; fi`;
}

/**
 * The Dockerfile of an E2B build. `fromTemplate` must already be resolved to a cordon template name
 * (`resolveTemplate`); a step the builder cannot express is refused here, before anything runs.
 */
export function translateBuild(body: BuildStart, resolveTemplate: (name: string) => string, forceNonce: string): TranslatedBuild {
  if (body.fromImageRegistry) throw bad('fromImageRegistry: registry credentials are not supported here; pull the image with `cordon image pull` and use fromImage, or build FROM a template');
  const fromImage = body.fromImage || undefined;
  const fromTemplate = body.fromTemplate || undefined;
  if (fromImage && fromTemplate) throw bad('give fromImage or fromTemplate, not both');
  const lines: string[] = [];
  const stepOf = new Map<number, number>();
  const push = (line: string, e2bStep?: number) => {
    lines.push(line);
    if (e2bStep !== undefined) stepOf.set(lines.length, e2bStep);
  };
  let base: string;
  if (fromTemplate) base = resolveTemplate(fromTemplate);
  else if (!fromImage || fromImage === E2B_DEFAULT_IMAGE || fromImage === `${E2B_DEFAULT_IMAGE}:latest`) base = 'base';
  else base = oneLine(fromImage, 'fromImage');
  if (/\s/.test(base) || base.startsWith('-')) throw bad(`fromImage: ${base} is not an image reference`);
  push(`FROM ${base}`, 0);
  // E2B builds on its base as `user` in /home/user (not Docker's root in /): the same on cordon's base.
  // That USER is the template's last one unless a setUser follows: its sandboxes default to `user` too.
  if (base === 'base') {
    push('USER "user"', 0);
    push('WORKDIR "/home/user"', 0);
  }
  const hashes = new Set<string>();
  let forced = false;
  (body.steps ?? []).forEach((s, i) => {
    const n = i + 1;
    const args = s.args ?? [];
    const what = `steps[${i}] (${s.type})`;
    // E2B's skipCache: this step and every later one run again; a fresh ARG changes all their cache keys.
    if (s.force && !forced) {
      forced = true;
      push(`ARG CORDON_E2B_FORCE=${forceNonce}`, n);
    }
    switch (s.type) {
      case 'RUN': {
        if (!args[0]?.trim()) throw bad(`${what}: needs a command`);
        const flag = args[1] ? ` --user=${literal(user(args[1], `${what} user`))}` : '';
        push(`RUN${flag} ${JSON.stringify(['/bin/sh', '-c', args[0]])}`, n);
        break;
      }
      case 'COPY': {
        const [src, dest, owner, mode] = args;
        if (!src || !dest) throw bad(`${what}: needs a source and a destination`);
        if (!s.filesHash) throw bad(`${what}: needs the filesHash of its uploaded files`);
        const rel = posix.normalize(oneLine(src, `${what} source`)).replace(/^(\.\/)+/, '').replace(/\/+$/, '');
        if (posix.isAbsolute(rel) || rel === '..' || rel.startsWith('../')) throw bad(`${what}: the source ${src} must be inside the context`);
        if (mode && !/^[0-7]{3,4}$/.test(mode)) throw bad(`${what}: mode ${mode.slice(0, 16)} must be octal, e.g. 0755`);
        hashes.add(s.filesHash);
        const flags = [owner ? `--chown=${literal(user(owner, `${what} user`))}` : '', mode ? `--chmod=${mode}` : ''].filter(Boolean);
        const from = rel === '.' || rel === '' ? s.filesHash : `${s.filesHash}/${rel}`;
        push(`COPY ${flags.join(' ')}${flags.length ? ' ' : ''}${JSON.stringify([literal(from), literal(oneLine(dest, `${what} destination`))])}`, n);
        break;
      }
      case 'ENV': {
        if (!args.length || args.length % 2) throw bad(`${what}: takes key, value pairs`);
        const pairs: string[] = [];
        for (let k = 0; k < args.length; k += 2) {
          if (!/^[A-Za-z_][A-Za-z0-9_.-]*$/.test(args[k])) throw bad(`${what}: "${args[k].slice(0, 64)}" is not a variable name`);
          pairs.push(`${args[k]}=${quoted(oneLine(args[k + 1], `${what} value of ${args[k]}`), true)}`);
        }
        push(`ENV ${pairs.join(' ')}`, n);
        break;
      }
      case 'WORKDIR':
        if (!args[0]) throw bad(`${what}: needs a path`);
        push(`WORKDIR ${quoted(oneLine(args[0], what))}`, n);
        break;
      case 'USER':
        push(`USER ${quoted(user(args[0] ?? '', what))}`, n);
        break;
      default:
        throw bad(`${what}: the step type ${s.type} is not supported; use RUN, COPY, ENV, WORKDIR or USER`);
    }
  });
  return {
    dockerfile: `${lines.join('\n')}\n`,
    hashes: [...hashes],
    stepOf,
    startCmd: body.startCmd || undefined,
    readyCmd: body.readyCmd ? mapReadyCmd(body.readyCmd) : undefined,
    noCache: !!body.force,
    homeWorkdir: (base === 'base' || !fromTemplate) && !(body.steps ?? []).some((s) => s.type === 'WORKDIR'),
  };
}
