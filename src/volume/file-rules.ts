import { posix } from 'node:path';
import { CordonError } from '../errors/registry.js';

/** Operations a file rule names (`*` = all). Opening read-write needs read and write. */
export const FILE_OPS = ['read', 'write', 'create', 'remove', 'rename', 'chmod', 'chown', 'list', '*'] as const;
export type FileOp = (typeof FILE_OPS)[number];

/**
 * Rules are checked in order; the first whose op and glob match decides; no match allows. Paths are the
 * sandbox's own (absolute): `*` and `?` within one component, `**` across any number.
 */
export interface FileRule {
  action: 'allow' | 'block';
  ops: FileOp[];
  path: string;
}

export const MAX_FILE_RULES = 64;
export const MAX_GLOB_LENGTH = 512;
export const MAX_EVENT_PATHS = 16;

/** Everything before the first glob character, cut back to whole components ("/data/**\/x" → "/data"). */
function literalDir(glob: string): string {
  const i = glob.search(/[*?[]/);
  if (i < 0) return posix.normalize(glob).replace(/(.)\/+$/, '$1');
  const head = glob.slice(0, i);
  return posix.dirname(head.endsWith('/') ? `${head}x` : head);
}

const within = (p: string, dir: string) => dir === '/' || p === dir || p.startsWith(`${dir}/`);
/** The glob could match something under target (or target itself lies under the glob's literal part). */
const reaches = (glob: string, target: string) => {
  const lit = literalDir(glob);
  return within(target, lit) || within(lit, target);
};

/** A glob or events path: absolute, bounded, no NUL, no `..` component. */
export function checkRulePath(p: string, field: string): void {
  if (!p.startsWith('/') || p.includes('\0') || p.length > MAX_GLOB_LENGTH || p.split('/').includes('..')) {
    throw new CordonError('invalid_argument', `${field}: ${p.slice(0, 80)} must be an absolute sandbox path (at most ${MAX_GLOB_LENGTH} characters, no ".." or NUL)`, { field });
  }
  if (p.split('/').filter((c) => c.includes('**') && c !== '**').length) {
    throw new CordonError('invalid_argument', `${field}: ${p.slice(0, 80)}: ** must be a whole path component (like /data/**/x.env)`, { field });
  }
}

export interface GatePlan {
  rules: FileRule[];
  events: string[];
}

/**
 * Which mounts get a gate, with which rules and event paths: a rule goes to every mount it can reach.
 * Every rule and events path must reach at least one gateable mount (bind, overlay, volume), else 400.
 */
export function planGates(targets: string[], rules: FileRule[], events: string[]): Map<string, GatePlan> {
  const plan = new Map<string, GatePlan>();
  const at = (t: string) => plan.get(t) ?? plan.set(t, { rules: [], events: [] }).get(t)!;
  for (const r of rules) {
    const hit = targets.filter((t) => reaches(r.path, t));
    if (!hit.length) {
      throw new CordonError('invalid_argument', `file_rules: ${r.path} is not under a bind or overlay mount or a volume (${targets.join(', ') || 'this sandbox has none'}); rules apply only there`, { field: 'file_rules' });
    }
    for (const t of hit) at(t).rules.push(r);
  }
  for (const e of events) {
    const hit = targets.filter((t) => within(t, e) || within(e, t));
    if (!hit.length) {
      throw new CordonError('invalid_argument', `file_events: ${e} is not under a bind or overlay mount or a volume (${targets.join(', ') || 'this sandbox has none'}); file events are reported only there`, { field: 'file_events' });
    }
    for (const t of hit) at(t).events.push(e);
  }
  return plan;
}
