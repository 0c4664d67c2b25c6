import { posix } from 'node:path';

// .dockerignore as Docker reads it: one pattern a line, "#" comments, "!" re-includes, "*" and "?"
// within one path component, "**" across any number; the last matching line wins, and a path is
// excluded when it or any of its parent directories is. Used by the daemon (authoritative) and by
// the CLI (so ignored files are not even uploaded).

interface Rule {
  re: RegExp;
  negate: boolean;
}

export interface IgnoreMatcher {
  (rel: string, isDir: boolean): boolean;
  /** Whether a "!" rule could re-include something under this excluded directory. */
  mayReinclude(rel: string): boolean;
}

function toRegex(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*') {
      if (pattern[i + 1] === '*') {
        i++;
        if (pattern[i + 1] === '/') {
          i++;
          re += '(?:.*/)?';
        } else re += '.*';
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export function ignoreMatcher(text: string): IgnoreMatcher {
  const rules: Rule[] = [];
  for (const raw of text.split(/\r?\n/)) {
    let line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const negate = line.startsWith('!');
    if (negate) line = line.slice(1).trim();
    line = posix.normalize(line.replace(/^\/+/, '')).replace(/\/+$/, '');
    if (!line || line === '.') continue;
    rules.push({ re: toRegex(line), negate });
  }
  const matchOne = (rel: string): boolean | undefined => {
    let verdict: boolean | undefined;
    for (const r of rules) if (r.re.test(rel)) verdict = !r.negate;
    return verdict;
  };
  const fn = ((rel: string) => {
    if (!rules.length) return false;
    const parts = rel.split('/');
    let excluded = false;
    for (let i = 1; i <= parts.length; i++) {
      const v = matchOne(parts.slice(0, i).join('/'));
      if (v !== undefined) excluded = v;
    }
    return excluded;
  }) as unknown as IgnoreMatcher;
  fn.mayReinclude = (rel: string) => rules.some((r) => r.negate && r.re.source.length > 0 && (r.re.source.startsWith(`^${rel.replace(/[.+^${}()|[\]\\]/g, '\\$&')}/`) || r.re.source.includes('.*')));
  return fn;
}
