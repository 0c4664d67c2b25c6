import { posix } from 'node:path';
import { CordonError } from '../../errors/registry.js';
import type { Instruction } from '../../image/template-build/dockerfile.js';
import { word, words, type Vars } from '../../image/template-build/shell-words.js';
import type { TemplateBase } from '../../store/templates.js';
import type { ImageConfig } from '../types.js';

// The image config a Dockerfile builds up as it goes, and the instructions that change only it
// (ENV, ARG, WORKDIR, USER, CMD, ENTRYPOINT, EXPOSE, LABEL, SHELL): they make no layer and no sandbox.

export interface BuildState {
  base: TemplateBase;
  parentTemplate?: string;
  /** Layer ids so far, bottom to top. */
  layers: string[];
  /** What the next step's cache key is chained to: the top layer id, or the base's identity. */
  parentKey: string;
  config: ImageConfig;
  exposed: string[];
  labels: Record<string, string>;
  /** ARGs declared since FROM, with their values. */
  args: Map<string, string>;
  shell: string[];
  /** A WORKDIR no step has created yet. */
  workdirPending?: string;
  /** CMD was set in this Dockerfile (an ENTRYPOINT then keeps it). */
  cmdSet: boolean;
}

export const DEFAULT_SHELL = ['/bin/sh', '-c'];

export function envMap(config: ImageConfig): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of config.env) {
    const i = e.indexOf('=');
    if (i > 0) m.set(e.slice(0, i), e.slice(i + 1));
  }
  return m;
}

/** Variables for expansion: ARGs, overridden by ENV (Docker's precedence). */
export function varsOf(s: BuildState): Vars {
  return new Map([...s.args, ...envMap(s.config)]);
}

/** ARG values a RUN sees in its environment (an ENV of the same name wins, and is in the image config). */
export function argEnv(s: BuildState): Record<string, string> {
  const env = envMap(s.config);
  return Object.fromEntries([...s.args].filter(([k]) => !env.has(k)));
}

function setEnv(config: ImageConfig, key: string, value: string): void {
  config.env = [...config.env.filter((e) => !e.startsWith(`${key}=`)), `${key}=${value}`];
}

/** key=value pairs (ENV, LABEL), or ENV's old "key value with spaces" form. */
function pairs(ins: Instruction, vars: Vars, escape: string): [string, string][] {
  const ws = words(ins.args, vars, escape);
  if (!ws.length) throw bad(ins, 'needs at least one key=value');
  if (!ws[0].includes('=')) {
    if (ins.keyword !== 'ENV' || ws.length < 2) throw bad(ins, 'takes key=value pairs');
    const key = ws[0];
    return [[key, word(ins.args.trim().slice(ins.args.trim().search(/\s/)), vars, escape)]];
  }
  return ws.map((w) => {
    const i = w.indexOf('=');
    if (i <= 0) throw bad(ins, `"${w}" is not key=value`);
    return [w.slice(0, i), w.slice(i + 1)];
  });
}

export function bad(ins: Instruction, why: string): CordonError {
  return new CordonError('invalid_argument', `Dockerfile line ${ins.line}: ${ins.keyword} ${why}`, { line: ins.line });
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/** Apply a config-only instruction; false when `ins` is not one. */
export function applyConfig(s: BuildState, ins: Instruction, buildArgs: Record<string, string>, escape: string): boolean {
  const vars = varsOf(s);
  switch (ins.keyword) {
    case 'ENV':
      for (const [k, v] of pairs(ins, vars, escape)) {
        if (!ENV_NAME.test(k)) throw bad(ins, `"${k}" is not a variable name`);
        setEnv(s.config, k, v);
      }
      return true;
    case 'ARG': {
      const ws = words(ins.args, vars, escape);
      if (!ws.length) throw bad(ins, 'needs a name');
      for (const w of ws) {
        const i = w.indexOf('=');
        const name = i < 0 ? w : w.slice(0, i);
        if (!ENV_NAME.test(name)) throw bad(ins, `"${name}" is not a variable name`);
        const value = buildArgs[name] ?? (i < 0 ? undefined : w.slice(i + 1));
        if (value !== undefined) s.args.set(name, value);
        else s.args.delete(name);
      }
      return true;
    }
    case 'LABEL':
      for (const [k, v] of pairs(ins, vars, escape)) s.labels[k] = v;
      return true;
    case 'WORKDIR': {
      const w = word(ins.args, vars, escape);
      if (!w) throw bad(ins, 'needs a path');
      const dir = posix.normalize(posix.isAbsolute(w) ? w : posix.join(s.config.workdir ?? '/', w));
      s.config.workdir = dir;
      delete s.config.homeWorkdir;
      s.workdirPending = dir;
      return true;
    }
    case 'USER': {
      const u = word(ins.args, vars, escape);
      if (!u || /\s/.test(u)) throw bad(ins, 'needs one user (name, uid, user:group or uid:gid)');
      s.config.user = u;
      return true;
    }
    case 'CMD':
      s.config.cmd = command(s, ins);
      s.cmdSet = true;
      return true;
    case 'ENTRYPOINT':
      s.config.entrypoint = command(s, ins);
      // Docker: a new ENTRYPOINT drops a CMD inherited from the base.
      if (!s.cmdSet) s.config.cmd = undefined;
      return true;
    case 'SHELL':
      if (!ins.json?.length) throw bad(ins, 'takes a JSON array, e.g. SHELL ["/bin/bash", "-c"]');
      s.shell = ins.json;
      return true;
    case 'EXPOSE':
      for (const p of words(ins.args, vars, escape)) {
        const m = /^(\d{1,5})(?:-(\d{1,5}))?(?:\/(tcp|udp|sctp))?$/i.exec(p);
        if (!m || Number(m[1]) > 65535 || (m[2] && Number(m[2]) > 65535)) throw bad(ins, `"${p}" is not a port, e.g. 8080 or 8080/tcp`);
        const spec = `${m[1]}${m[2] ? `-${m[2]}` : ''}/${(m[3] ?? 'tcp').toLowerCase()}`;
        if (!s.exposed.includes(spec)) s.exposed.push(spec);
      }
      return true;
    default:
      return false;
  }
}

/** CMD/ENTRYPOINT/RUN argv: the exec form as given, the shell form through SHELL. */
export function command(s: BuildState, ins: Instruction): string[] {
  if (ins.json) return ins.json;
  if (!ins.args) throw bad(ins, 'needs a command');
  return [...s.shell, ins.args];
}
