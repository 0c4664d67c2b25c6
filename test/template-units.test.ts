import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { selectCopy, type ContextEntry } from '../src/image/template-build/context.js';
import { parseDockerfile } from '../src/image/template-build/dockerfile.js';
import { ignoreMatcher } from '../src/image/template-build/dockerignore.js';
import { DockerfileSyntaxError, word, words } from '../src/image/template-build/shell-words.js';

// Unit tests of the pure parts of template builds: the Dockerfile reader, Docker's word rules,
// .dockerignore and which files a COPY takes.

describe('Dockerfile parser', () => {
  it('joins continuations, drops comments (also inside a continuation), reads flags and the JSON form', () => {
    const df = parseDockerfile('# a comment\nfrom base\nRUN apt-get update && \\\n# inside\n    apt-get install -y x\nCOPY --chown=user:user --chmod=0644 a b /dst/\nCMD ["echo", "hi"]\nENTRYPOINT [not json\n');
    assert.deepEqual(df.instructions.map((i) => i.keyword), ['FROM', 'RUN', 'COPY', 'CMD', 'ENTRYPOINT']);
    assert.equal(df.instructions[1].args, 'apt-get update &&     apt-get install -y x');
    assert.equal(df.instructions[1].line, 3);
    assert.deepEqual(df.instructions[2].flags, { chown: 'user:user', chmod: '0644' });
    assert.equal(df.instructions[2].args, 'a b /dst/');
    assert.deepEqual(df.instructions[3].json, ['echo', 'hi']);
    assert.equal(df.instructions[4].json, undefined, 'not JSON: the shell form');
  });

  it('honours the escape directive', () => {
    const df = parseDockerfile('# escape=`\nFROM base\nRUN echo a `\n    b\n');
    assert.equal(df.escape, '`');
    assert.equal(df.instructions[1].args, 'echo a     b');
  });

  it('refuses what is not a Dockerfile', () => {
    assert.throws(() => parseDockerfile('\n# only a comment\n'), DockerfileSyntaxError);
    assert.throws(() => parseDockerfile('FROM base\n-- weird\n'), /is not an instruction/);
    assert.throws(() => parseDockerfile('FROM base\0\n'), /NUL/);
  });
});

describe('Dockerfile word rules', () => {
  const vars = new Map([
    ['A', 'alpha'],
    ['EMPTY', ''],
  ]);
  it('expands $VAR, ${VAR}, defaults and alternatives, and removes quotes', () => {
    assert.deepEqual(words('$A ${A}x "q $A" \'s $A\' \\$A', vars), ['alpha', 'alphax', 'q alpha', 's $A', '$A']);
    assert.deepEqual(words('${MISSING:-def} ${EMPTY:-def} ${EMPTY-def} ${A:+alt} ${MISSING:+alt}x', vars), ['def', 'def', '', 'alt', 'x']);
    assert.equal(word('  "a b"  c ', vars), 'a b  c');
  });
  it('refuses unmatched quotes and bad substitutions', () => {
    assert.throws(() => words('"open', vars), /unmatched "/);
    assert.throws(() => words('${A', vars), /missing }/);
    assert.throws(() => words('${A/x/y}', vars), /unsupported substitution/);
  });
});

describe('.dockerignore', () => {
  it('excludes by pattern and parent, re-includes with !, and ** spans directories', () => {
    const ig = ignoreMatcher('# comment\nnode_modules\n*.log\n!keep.log\nbuild/**/tmp\n/secret\n');
    assert.equal(ig('node_modules', true), true);
    assert.equal(ig('node_modules/x/y.js', false), true);
    assert.equal(ig('a.log', false), true);
    assert.equal(ig('keep.log', false), false);
    assert.equal(ig('sub/a.log', false), false, '* does not cross /');
    assert.equal(ig('build/x/y/tmp', true), true);
    assert.equal(ig('build/tmp', true), true);
    assert.equal(ig('secret', false), true);
    assert.equal(ig('src/main.ts', false), false);
  });
});

describe('COPY source selection', () => {
  const e = (rel: string, type: ContextEntry['type'] = 'file', link?: string): ContextEntry => ({ rel, type, mode: type === 'dir' ? 0o755 : 0o644, size: 1, link });
  const entries = [e('a.txt'), e('b.txt'), e('dir', 'dir'), e('dir/c.txt'), e('dir/sub', 'dir'), e('dir/sub/d.txt'), e('ln', 'symlink', '/etc')];

  it("copies a directory's contents, a file to the path or into a directory", () => {
    assert.deepEqual(selectCopy(entries, ['dir'], '/app').map((i) => i.dest), ['/app/c.txt', '/app/sub', '/app/sub/d.txt']);
    assert.deepEqual(selectCopy(entries, ['a.txt'], '/x/renamed').map((i) => i.dest), ['/x/renamed']);
    assert.deepEqual(selectCopy(entries, ['a.txt'], '/x/').map((i) => i.dest), ['/x/a.txt']);
    assert.deepEqual(selectCopy(entries, ['a.txt', 'b.txt'], '/x').map((i) => i.dest), ['/x/a.txt', '/x/b.txt']);
    assert.deepEqual(selectCopy(entries, ['*.txt'], '/g/').map((i) => i.dest), ['/g/a.txt', '/g/b.txt']);
    assert.deepEqual(selectCopy(entries, ['ln'], '/l').map((i) => [i.dest, i.entry.link]), [['/l', '/etc']]);
  });

  it('refuses sources outside the context, through a symlink, or missing', () => {
    assert.throws(() => selectCopy(entries, ['../x'], '/'), /outside the build context/);
    assert.throws(() => selectCopy(entries, ['dir/../../x'], '/'), /outside the build context/);
    assert.throws(() => selectCopy(entries, ['ln/shadow'], '/'), /goes through the symlink ln/);
    assert.throws(() => selectCopy(entries, ['nope'], '/'), /not in the build context/);
    assert.throws(() => selectCopy(entries, ['*.none'], '/'), /matches no file/);
  });
});
