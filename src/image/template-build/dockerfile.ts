import { DockerfileSyntaxError } from './shell-words.js';

// A Dockerfile read into instructions: parser directives (escape), comments, line continuations,
// leading --flags, and the JSON (exec) form. Variables are expanded later, step by step, because
// their values depend on the ENV and ARG instructions before each one.

export interface Instruction {
  /** 1-based line where the instruction starts. */
  line: number;
  /** Upper-case keyword: RUN, COPY, ... */
  keyword: string;
  /** --name=value flags before the arguments (COPY --chown=..., RUN --network=...). */
  flags: Record<string, string>;
  /** The arguments as written (continuations joined), flags removed. */
  args: string;
  /** The exec form, when the arguments are a JSON array of strings. */
  json?: string[];
  /** The instruction as written, continuations joined (for progress and errors). */
  text: string;
}

export interface Dockerfile {
  escape: string;
  instructions: Instruction[];
}

export const MAX_DOCKERFILE_BYTES = 1024 * 1024;
const MAX_INSTRUCTIONS = 1000;
/** Instructions whose arguments may be a JSON array. */
const JSON_FORM = new Set(['RUN', 'CMD', 'ENTRYPOINT', 'SHELL', 'COPY', 'ADD', 'VOLUME']);
const WITH_FLAGS = new Set(['RUN', 'COPY', 'ADD', 'FROM']);

export function parseDockerfile(src: string): Dockerfile {
  if (Buffer.byteLength(src) > MAX_DOCKERFILE_BYTES) throw new DockerfileSyntaxError(`the Dockerfile is larger than ${MAX_DOCKERFILE_BYTES} bytes`);
  if (src.includes('\0')) throw new DockerfileSyntaxError('the Dockerfile contains a NUL byte');
  const lines = src.replace(/^\uFEFF/, '').split(/\r?\n/);
  let escape = '\\';
  let i = 0;
  // Parser directives: "# key=value" lines at the very top, before any comment, blank line or instruction.
  for (; i < lines.length; i++) {
    const m = /^\s*#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$/.exec(lines[i]);
    if (!m) break;
    if (m[1].toLowerCase() === 'escape') {
      if (m[2] !== '\\' && m[2] !== '`') throw new DockerfileSyntaxError(`line ${i + 1}: the escape directive takes \\ or \`, not ${m[2]}`);
      escape = m[2];
    }
  }
  const instructions: Instruction[] = [];
  while (i < lines.length) {
    const start = i;
    const first = lines[i];
    i++;
    if (/^\s*(#|$)/.test(first)) continue;
    let text = first;
    // A line ending in the escape character continues; comment lines inside are dropped.
    while (endsWithEscape(text, escape)) {
      text = text.replace(/\s*$/, '').slice(0, -1);
      while (i < lines.length && /^\s*#/.test(lines[i])) i++;
      if (i >= lines.length) break;
      text += lines[i];
      i++;
    }
    instructions.push(parseInstruction(text.trim(), start + 1));
    if (instructions.length > MAX_INSTRUCTIONS) throw new DockerfileSyntaxError(`the Dockerfile has more than ${MAX_INSTRUCTIONS} instructions`);
  }
  if (!instructions.length) throw new DockerfileSyntaxError('the Dockerfile has no instructions; it must start with FROM');
  return { escape, instructions };
}

function endsWithEscape(line: string, escape: string): boolean {
  return line.replace(/\s*$/, '').endsWith(escape);
}

function parseInstruction(text: string, line: number): Instruction {
  const m = /^(\S+)\s*([\s\S]*)$/.exec(text)!;
  const keyword = m[1].toUpperCase();
  if (!/^[A-Z]+$/.test(keyword)) throw new DockerfileSyntaxError(`line ${line}: "${m[1].slice(0, 40)}" is not an instruction`);
  let args = m[2];
  const flags: Record<string, string> = {};
  if (WITH_FLAGS.has(keyword)) {
    for (;;) {
      const f = /^--([a-z][a-z0-9-]*)(?:=(\S*))?\s*/.exec(args);
      if (!f) break;
      flags[f[1]] = f[2] ?? 'true';
      args = args.slice(f[0].length);
    }
  }
  args = args.trim();
  let json: string[] | undefined;
  if (JSON_FORM.has(keyword) && args.startsWith('[')) {
    try {
      const v = JSON.parse(args) as unknown;
      if (Array.isArray(v) && v.every((s) => typeof s === 'string')) json = v;
    } catch {
      /* not JSON: the shell form, as Docker reads it */
    }
  }
  return { line, keyword, flags, args, json, text };
}
