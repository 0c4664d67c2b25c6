// Docker's word rules for the instructions whose arguments the builder itself reads (ENV, ARG, COPY,
// WORKDIR, USER, FROM, EXPOSE, ...): quotes are removed, the escape character escapes, and $VAR,
// ${VAR}, ${VAR:-word}, ${VAR:+word} (and the forms without the colon) are replaced from the build's
// variables. RUN, CMD and ENTRYPOINT are left alone: their shell does this at run time.

export type Vars = ReadonlyMap<string, string>;

export class DockerfileSyntaxError extends Error {}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*/;

interface Lex {
  /** Split on unquoted whitespace (false: one word, spaces kept). */
  split: boolean;
  escape: string;
}

/** The words of `text` after quote removal and variable expansion. */
export function words(text: string, vars: Vars, escape = '\\'): string[] {
  return lex(text, vars, { split: true, escape });
}

/** `text` as one word: quotes removed, variables expanded, spaces kept. */
export function word(text: string, vars: Vars, escape = '\\'): string {
  return lex(text.trim(), vars, { split: false, escape }).join('');
}

function lex(text: string, vars: Vars, o: Lex): string[] {
  const out: string[] = [];
  let cur = '';
  let started = false;
  let i = 0;
  const flush = () => {
    if (started) out.push(cur);
    cur = '';
    started = false;
  };
  while (i < text.length) {
    const c = text[i];
    if (o.split && /\s/.test(c)) {
      flush();
      i++;
      continue;
    }
    started = true;
    if (c === o.escape) {
      if (i + 1 < text.length) cur += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "'") {
      const end = text.indexOf("'", i + 1);
      if (end < 0) throw new DockerfileSyntaxError(`unmatched ' in ${text.slice(0, 200)}`);
      cur += text.slice(i + 1, end);
      i = end + 1;
      continue;
    }
    if (c === '"') {
      i++;
      for (;;) {
        if (i >= text.length) throw new DockerfileSyntaxError(`unmatched " in ${text.slice(0, 200)}`);
        const d = text[i];
        if (d === '"') {
          i++;
          break;
        }
        if (d === o.escape && i + 1 < text.length && (text[i + 1] === '"' || text[i + 1] === '$' || text[i + 1] === o.escape)) {
          cur += text[i + 1];
          i += 2;
        } else if (d === '$') {
          const r = expand(text, i, vars, o.escape);
          cur += r.value;
          i = r.next;
        } else {
          cur += d;
          i++;
        }
      }
      continue;
    }
    if (c === '$') {
      const r = expand(text, i, vars, o.escape);
      cur += r.value;
      i = r.next;
      continue;
    }
    cur += c;
    i++;
  }
  flush();
  return out;
}

/** Expand the variable reference starting at text[at] === '$'. */
function expand(text: string, at: number, vars: Vars, escape: string): { value: string; next: number } {
  const rest = text.slice(at + 1);
  if (rest.startsWith('{')) {
    const close = matchingBrace(text, at + 1);
    const inner = text.slice(at + 2, close);
    const m = NAME.exec(inner);
    if (!m) throw new DockerfileSyntaxError(`bad substitution \${${inner}}`);
    const name = m[0];
    const op = inner.slice(name.length);
    const val = vars.get(name);
    const next = close + 1;
    if (op === '') return { value: val ?? '', next };
    const mm = /^(:?)([-+])([\s\S]*)$/.exec(op);
    if (!mm) throw new DockerfileSyntaxError(`unsupported substitution \${${inner}}; use \${NAME}, \${NAME:-default} or \${NAME:+alternative}`);
    const [, colon, kind, arg] = mm;
    const set = colon ? val !== undefined && val !== '' : val !== undefined;
    const alt = () => lex(arg, vars, { split: false, escape }).join('');
    if (kind === '-') return { value: set ? val! : alt(), next };
    return { value: set ? alt() : '', next };
  }
  const m = NAME.exec(rest);
  if (!m) return { value: '$', next: at + 1 };
  return { value: vars.get(m[0]) ?? '', next: at + 1 + m[0].length };
}

function matchingBrace(text: string, open: number): number {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) return i;
  }
  throw new DockerfileSyntaxError(`missing } in ${text.slice(open - 1, open + 60)}`);
}
