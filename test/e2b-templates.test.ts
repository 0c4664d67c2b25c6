// The official `e2b` SDK's Template API against cordon: Template.build with copy of a local directory,
// env, workdir, user and a start command checked by waitForPort; Sandbox.create by name and by
// name:tag; tags; the template's last setUser as its sandboxes' default user; a failing step (error
// status with its output, no template left); buildInBackground with getBuildStatus paged by
// logsOffset; and the signed upload URL refusing hostile requests.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { Sandbox, Template, waitForPort, type LogEntry } from 'e2b';
import tar from 'tar-stream';
import { mapReadyCmd, translateBuild } from '../src/api/e2b/template-steps.js';
import { parseDockerfile } from '../src/image/template-build/dockerfile.js';
import { word, words } from '../src/image/template-build/shell-words.js';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';
import { until } from './helpers/assert.js';

const KEY = 'e2b_templates_test_key';
const NAME = `e2b-web-${process.pid}`;
const BG = `e2b-bg-${process.pid}`;
const BAD = `e2b-bad-${process.pid}`;
let d: TestDaemon;
let work: string;
let o: { apiKey: string; apiUrl: string; sandboxUrl: string; domain: string };
/** A build run in the background that ended ready, and its log, for the restart test. */
let finished: { data: Awaited<ReturnType<typeof Template.buildInBackground>>; messages: string[] } | undefined;

before(async () => {
  d = await startDaemon('e2b-templates', { apiKey: KEY, args: ['--max-upload', '1m'] });
  o = { apiKey: KEY, apiUrl: d.url, sandboxUrl: d.url, domain: 'cordon.invalid' };
  work = mkdtempSync('/var/lib/cordon-test/e2b-tmpl-work-');
  mkdirSync(join(work, 'site', 'sub'), { recursive: true });
  writeFileSync(join(work, 'site', 'index.html'), 'hello from the template\n');
  writeFileSync(join(work, 'site', 'sub', 'deep.txt'), 'deep\n');
});

after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const headers: Record<string, string> = { 'x-api-key': KEY, ...(body === undefined ? {} : { 'content-type': 'application/json' }) };
  const res = await fetch(`${d.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}

async function tarGz(entries: { name: string; type?: 'file' | 'directory' | 'symlink' | 'character-device'; body?: string; linkname?: string }[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) pack.entry({ name: e.name, type: e.type ?? 'file', linkname: e.linkname, mode: 0o644, devmajor: 1, devminor: 3 }, e.body ?? (e.type === 'file' || !e.type ? '' : undefined));
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return gzipSync(Buffer.concat(chunks));
}

describe('E2B steps as a Dockerfile (unit)', () => {
  test('values come back exactly as sent: quotes, $, a trailing backslash, spaces; bad steps are refused', () => {
    const nasty = 'a "b" \'c\' $HOME ${X} end\\';
    const tr = translateBuild(
      { fromTemplate: 'base', steps: [{ type: 'WORKDIR', args: [nasty] }, { type: 'RUN', args: ['echo "$HOME" \\', 'root'] }, { type: 'COPY', args: ['./d/', nasty, 'user', '0640'], filesHash: 'e'.repeat(64) }, { type: 'ENV', args: ['K', 'v w\\'] }] },
      (n) => n,
      'nonce',
    );
    const ins = parseDockerfile(tr.dockerfile).instructions;
    assert.deepEqual(ins.map((i) => i.keyword), ['FROM', 'USER', 'WORKDIR', 'WORKDIR', 'RUN', 'COPY', 'ENV']);
    assert.equal(word(ins[3].args, new Map([['HOME', 'NO']])), nasty);
    assert.deepEqual(ins[4].json, ['/bin/sh', '-c', 'echo "$HOME" \\']);
    assert.equal(ins[4].flags.user, 'root');
    assert.deepEqual(ins[5].json!.map((a) => word(a, new Map())), [`${'e'.repeat(64)}/d`, nasty]);
    assert.deepEqual(words(ins[6].args, new Map()), ['K=v w\\']);
    assert.deepEqual([...tr.stepOf], [[1, 0], [2, 0], [3, 0], [4, 1], [5, 2], [6, 3], [7, 4]]);
    const bad = (steps: unknown[]) => assert.throws(() => translateBuild({ fromTemplate: 'base', steps } as never, (n) => n, 'n'), /steps\[0\]/);
    bad([{ type: 'ENV', args: ['K', 'two\nlines'] }]);
    bad([{ type: 'COPY', args: ['../up', '/x'], filesHash: 'e'.repeat(64) }]);
    bad([{ type: 'COPY', args: ['a', '/x'] }]);
    bad([{ type: 'RUN', args: ['true', 'two users'] }]);
    bad([{ type: 'HEALTHCHECK', args: [] }]);
    assert.throws(() => translateBuild({ fromImage: 'x', fromImageRegistry: { type: 'registry' } }, (n) => n, 'n'), /credentials/);
    // Without a WORKDIR step the sandbox starts in its user's home; from another template, the parent decides.
    assert.equal(tr.homeWorkdir, false);
    assert.equal(translateBuild({ fromTemplate: 'base', steps: [{ type: 'USER', args: ['root'] }] }, (n) => n, 'n').homeWorkdir, true);
    assert.equal(translateBuild({ steps: [{ type: 'RUN', args: ['true'] }] }, (n) => n, 'n').homeWorkdir, true);
    assert.equal(translateBuild({ fromTemplate: 'mine', steps: [{ type: 'USER', args: ['root'] }] }, (n) => n, 'n').homeWorkdir, false);
  });

  test('waitForPort works without ss; other ready commands pass through', () => {
    assert.match(mapReadyCmd('[ -n "$(ss -Htuln sport = :8000)" ]'), /:1F40 .*\/proc\/net\/tcp/);
    assert.equal(mapReadyCmd('[ -f /tmp/ready ]'), '[ -f /tmp/ready ]');
  });
});

describe('e2b Template API', () => {
  test('Template.build: copy of a directory, env, workdir, user, start command with waitForPort; Sandbox.create(name) twice', async () => {
    const t = Template({ fileContextPath: work })
      .fromTemplate('base')
      .setEnvs({ GREETING: 'hi there', PRICE: '$5 "quoted"' })
      .setWorkdir('/srv')
      .copy('site', '/srv/site')
      .runCmd('echo "built as $(id -un) in $(pwd)" > /srv/built.txt', { user: 'root' })
      // E2B's default during a build: user, in /home/user unless setWorkdir said otherwise.
      .runCmd('echo "$(id -un) $(pwd)" > /home/user/who.txt; chmod 0644 /home/user/who.txt')
      .setUser('user')
      .setStartCmd('python3 -m http.server 8000 --directory /srv/site', waitForPort(8000));
    const logs: LogEntry[] = [];
    const info = await Template.build(t, NAME, { ...o, onBuildLogs: (l) => logs.push(l) });
    assert.equal(info.name, NAME);
    assert.ok(info.buildId);
    assert.ok(logs.some((l) => /Uploaded 'site'/.test(l.message)), 'the SDK uploaded the directory');
    assert.ok(logs.some((l) => /is ready/.test(l.message)), logs.map((l) => l.message).join('\n'));

    for (let i = 0; i < 2; i++) {
      const s = await Sandbox.create(NAME, { ...o, timeoutMs: 120_000 });
      try {
        // The server was started and found listening before create returned.
        // Commands start in the template's last WORKDIR (E2B's defaultWorkdir), not the home.
        const r = await s.commands.run('curl -s http://127.0.0.1:8000/index.html; cat /srv/site/sub/deep.txt /srv/built.txt /home/user/who.txt; echo "$GREETING|$PRICE"; id -un; pwd');
        assert.deepEqual(r.stdout.trim().split('\n'), ['hello from the template', 'deep', 'built as root in /srv', 'user /srv', 'hi there|$5 "quoted"', 'user', '/srv']);
        // A relative cwd is taken from the home, as envd does; cordon's own exec starts in the WORKDIR too.
        assert.equal((await s.commands.run('pwd', { cwd: '.' })).stdout, '/home/user\n');
        assert.equal((await d.client.sandbox(s.sandboxId).exec(['pwd'])).stdout, '/srv\n');
      } finally {
        await s.kill();
      }
    }
    // Unchanged: a second build comes from the step cache, and the upload is skipped.
    const again: LogEntry[] = [];
    await Template.build(t, NAME, { ...o, onBuildLogs: (l) => again.push(l) });
    assert.ok(again.some((l) => /Skipping upload of 'site'/.test(l.message)));
    assert.ok(again.filter((l) => /\] cached$/.test(l.message)).length >= 3, again.map((l) => l.message).join('\n'));
  });

  test('tags: exists, assignTags, getTags, Sandbox.create(name:tag), removeTags', async () => {
    assert.equal(await Template.exists(NAME, o), true);
    assert.equal(await Template.exists(`nope-${process.pid}`, o), false);
    await Template.assignTags(NAME, 'v2', o);
    const tags = (await Template.getTags(NAME, o)).map((x) => x.tag).sort();
    assert.deepEqual(tags, ['default', 'v2']);
    const s = await Sandbox.create(`${NAME}:v2`, { ...o, timeoutMs: 60_000 });
    try {
      assert.equal((await s.commands.run('curl -s http://127.0.0.1:8000/index.html')).stdout.trim(), 'hello from the template');
      assert.equal((await Sandbox.getInfo(s.sandboxId, o)).templateId, `${NAME}:v2`);
    } finally {
      await s.kill();
    }
    await Template.removeTags(NAME, 'v2', o);
    assert.deepEqual((await Template.getTags(NAME, o)).map((x) => x.tag), ['default']);
    await assert.rejects(Sandbox.create(`${NAME}:v2`, { ...o, timeoutMs: 10_000 }));
  });

  test('buildInBackground + getBuildStatus: logs paged by logsOffset, then ready; the tag is what create takes', async () => {
    const t = Template().fromTemplate('base').runCmd('for i in 1 2 3; do echo line-$i; done > lines; cat lines');
    const data = await Template.buildInBackground(t, `${BG}:v1`, o);
    assert.deepEqual(data.tags, ['v1']);
    let status = await Template.getBuildStatus(data, o);
    await until('the build ends', async () => {
      status = await Template.getBuildStatus(data, o);
      return status.status === 'ready' || status.status === 'error';
    }, 120_000);
    assert.equal(status.status, 'ready', JSON.stringify(status.reason));
    const all = (await Template.getBuildStatus(data, { ...o, logsOffset: 0 })).logEntries.map((l) => l.message);
    assert.ok(all.includes('line-2'), all.join('\n'));
    const rest = (await Template.getBuildStatus(data, { ...o, logsOffset: 2 })).logEntries.map((l) => l.message);
    assert.deepEqual(rest, all.slice(2));
    assert.deepEqual((await Template.getBuildStatus(data, { ...o, logsOffset: all.length })).logEntries, [], 'an empty page after the end');
    finished = { data, messages: all };

    const s = await Sandbox.create(`${BG}:v1`, { ...o, timeoutMs: 60_000 });
    try {
      assert.equal((await s.commands.run('cat /home/user/lines')).stdout, 'line-1\nline-2\nline-3\n');
      // No setUser: E2B's default user `user`, in its home, for commands and files alike.
      assert.equal((await s.commands.run('whoami; pwd')).stdout, 'user\n/home/user\n');
      assert.equal((await s.files.write('rel.txt', 'r')).path, '/home/user/rel.txt');
      assert.equal((await s.files.getInfo('/home/user/rel.txt')).owner, 'user');
    } finally {
      await s.kill();
    }
    await assert.rejects(Sandbox.create(BG, { ...o, timeoutMs: 10_000 }), 'only the v1 tag was built');
    assert.equal((await api('DELETE', `/templates/${BG}`)).status, 204);
    assert.equal(await Template.exists(BG, o), false);
  });

  test("the template's last setUser is the sandbox's default user (commands, cwd, files); a named user still wins", async () => {
    const cases = [
      { name: `e2b-root-${process.pid}`, t: Template().fromTemplate('base').setUser('root'), user: 'root', home: '/root' },
      // A user made by a step, as E2B's docs show it: its home is where commands start.
      { name: `e2b-guest-${process.pid}`, t: Template().fromTemplate('base').runCmd('useradd -m -s /bin/bash guest', { user: 'root' }).setUser('guest'), user: 'guest', home: '/home/guest' },
    ];
    await Promise.all(cases.map((c) => Template.build(c.t, c.name, o)));
    // A template built on it keeps its user and its home as the start directory.
    const child = { name: `e2b-child-${process.pid}`, t: Template().fromTemplate(cases[0].name).runCmd('touch ~/child-was-here'), user: 'root', home: '/root' };
    await Template.build(child.t, child.name, o);
    cases.unshift(child);
    for (const c of cases) {
      const s = await Sandbox.create(c.name, { ...o, timeoutMs: 60_000 });
      try {
        assert.equal((await s.commands.run('whoami; pwd; echo $HOME')).stdout, `${c.user}\n${c.home}\n${c.home}\n`, c.name);
        // files: owner, a relative path and ~ follow the same default user.
        assert.equal((await s.files.write('rel.txt', 'r')).path, `${c.home}/rel.txt`);
        assert.equal((await s.files.write('~/tilde.txt', 't')).path, `${c.home}/tilde.txt`);
        for (const f of ['rel.txt', 'tilde.txt']) assert.equal((await s.files.getInfo(`${c.home}/${f}`)).owner, c.user, f);
        assert.equal((await s.files.read('rel.txt')), 'r');
        // The user named in the request wins over the template's.
        assert.equal((await s.commands.run('whoami; pwd', { user: 'user' })).stdout, 'user\n/home/user\n');
        await s.files.write('/tmp/by-user.txt', 'u', { user: 'user' });
        assert.equal((await s.files.getInfo('/tmp/by-user.txt')).owner, 'user');
      } finally {
        await s.kill();
      }
    }
    for (const c of cases) assert.equal((await api('DELETE', `/templates/${c.name}`)).status, 204);
  });

  test('a failing step: error status naming the step with its output, and no template left', async () => {
    const t = Template().fromTemplate('base').runCmd('echo fine').runCmd('echo about-to-fail; echo oops-on-stderr >&2; false');
    const logs: LogEntry[] = [];
    await assert.rejects(Template.build(t, BAD, { ...o, onBuildLogs: (l) => logs.push(l) }), (e: Error) => /oops-on-stderr/.test(e.message) && /exit code 1/.test(e.message));
    assert.ok(logs.some((l) => l.message === 'about-to-fail'));
    assert.equal(await Template.exists(BAD, o), false);
    assert.equal((await api('GET', `/v1/templates/${BAD}`)).status, 404);

    const bg = await Template.buildInBackground(t, BAD, o);
    await until('the build fails', async () => (await Template.getBuildStatus(bg, o)).status === 'error', 120_000);
    const st = await Template.getBuildStatus(bg, o);
    assert.equal(st.reason?.step, '2', 'the second step failed');
    assert.match(st.reason!.message, /oops-on-stderr/);
    assert.ok(st.reason!.logEntries.some((l) => l.message === 'about-to-fail'));
  });

  test('a step flooding its output: the build log is capped and says so', async () => {
    const t = Template().fromTemplate('base').runCmd('seq 1 40000; echo done-flooding');
    const data = await Template.buildInBackground(t, `e2b-flood-${process.pid}`, o);
    await until('the build ends', async () => (await Template.getBuildStatus(data, o)).status !== 'building', 120_000);
    const entries: string[] = [];
    for (;;) {
      const page = (await Template.getBuildStatus(data, { ...o, logsOffset: entries.length })).logEntries;
      if (!page.length) break;
      entries.push(...page.map((l) => l.message));
    }
    assert.ok(entries.length <= 20_003, `${entries.length} entries`);
    assert.ok(entries.some((m) => /log lines were left out/.test(m)));
    assert.ok(entries.some((m) => /is ready/.test(m)));
    assert.equal((await api('DELETE', `/templates/e2b-flood-${process.pid}`)).status, 204);
  });

  test('bad requests: unknown step type, missing files, unknown base template, bad names', async () => {
    const req = await api('POST', '/v3/templates', { name: `e2b-x-${process.pid}` });
    assert.equal(req.status, 202);
    const trigger = (body: unknown) => fetch(`${d.url}/v2/templates/${req.json.templateID}/builds/${req.json.buildID}`, { method: 'POST', headers: { 'x-api-key': KEY, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    let r = await trigger({ fromTemplate: 'base', steps: [{ type: 'ONBUILD', args: ['x'] }] });
    assert.equal(r.status, 400);
    assert.match(((await r.json()) as { message: string }).message, /ONBUILD is not supported/);
    r = await trigger({ fromTemplate: 'base', steps: [{ type: 'COPY', args: ['a', '/a'], filesHash: 'f'.repeat(64) }] });
    assert.equal(r.status, 202, 'accepted; the missing upload fails the build');
    await until('the build fails', async () => (await api('GET', `/templates/${req.json.templateID}/builds/${req.json.buildID}/status`)).json.status === 'error');
    assert.match((await api('GET', `/templates/${req.json.templateID}/builds/${req.json.buildID}/status`)).json.reason.message, /never uploaded/);
    const req2 = await api('POST', '/v3/templates', { name: `e2b-y-${process.pid}` });
    r = await fetch(`${d.url}/v2/templates/${req2.json.templateID}/builds/${req2.json.buildID}`, { method: 'POST', headers: { 'x-api-key': KEY, 'content-type': 'application/json' }, body: JSON.stringify({ fromTemplate: `missing-${process.pid}` }) });
    assert.equal(r.status, 400);
    assert.equal((await api('POST', '/v3/templates', { name: 'Bad Name' })).status, 400);
    assert.equal((await api('POST', '/v3/templates', { name: 'base' })).status, 400);
    assert.equal((await api('GET', `/templates/${req.json.templateID}/builds/nosuchbuild/status`)).status, 404);
  });

  test('build records outlive a daemon restart: a finished build pages its log by offset, one the restart cut short reads as error', async () => {
    assert.ok(finished, 'the buildInBackground test ran first');
    const cutName = `e2b-cut-${process.pid}`;
    const cut = await Template.buildInBackground(Template().fromTemplate('base').runCmd('echo long-step-started; sleep 600'), cutName, o);
    await until('the long step runs', async () => (await Template.getBuildStatus(cut, o)).logEntries.some((l) => l.message === 'long-step-started'), 120_000);
    await d.stop('SIGKILL');
    await d.restart();

    const st = await Template.getBuildStatus(finished.data, { ...o, logsOffset: 0 });
    assert.equal(st.status, 'ready');
    assert.deepEqual(st.logEntries.map((l) => l.message), finished.messages);
    assert.deepEqual((await Template.getBuildStatus(finished.data, { ...o, logsOffset: 2 })).logEntries.map((l) => l.message), finished.messages.slice(2));
    assert.deepEqual((await Template.getBuildStatus(finished.data, { ...o, logsOffset: finished.messages.length })).logEntries, []);

    const c = await Template.getBuildStatus(cut, o);
    assert.equal(c.status, 'error');
    assert.equal(c.reason?.step, '1');
    assert.match(c.reason!.message, /daemon restarted while this build was running.*start the build again/);
    assert.ok(c.logEntries.some((l) => l.message === 'long-step-started'), 'its log up to the restart is kept');
    assert.equal(await Template.exists(cutName, o), false);
    assert.deepEqual((await d.client.list()).filter((s) => s.labels['cordon.build']), [], 'the step sandbox went with the restart');
  });

  test('the upload URL: no API key needed, refuses a wrong signature, a path-escaping tar, a device, an oversized body', async () => {
    const req = await api('POST', '/v3/templates', { name: `e2b-up-${process.pid}` });
    const hash = 'a'.repeat(64);
    const link = await api('GET', `/templates/${req.json.templateID}/files/${hash}`);
    assert.equal(link.status, 201);
    assert.equal(link.json.present, false);
    const url = new URL(link.json.url as string);
    assert.equal(url.origin, d.url);
    const put = (u: URL | string, body: Buffer) => fetch(u, { method: 'PUT', body: new Uint8Array(body) });

    const wrong = new URL(url);
    wrong.searchParams.set('signature', 'b'.repeat(64));
    assert.equal((await put(wrong, await tarGz([{ name: 'x', body: 'x' }]))).status, 403);
    const otherHash = new URL(url.href.replace(hash, 'c'.repeat(64)));
    assert.equal((await put(otherHash, await tarGz([{ name: 'x', body: 'x' }]))).status, 403, 'a URL is good for its own hash only');
    const later = new URL(url);
    later.searchParams.set('expires', String(Number(url.searchParams.get('expires')) + 3600));
    assert.equal((await put(later, await tarGz([{ name: 'x', body: 'x' }]))).status, 403, 'the expiry is signed');

    const escaping = await put(url, await tarGz([{ name: 'ok.txt', body: 'ok' }, { name: '../../escape.txt', body: 'out' }]));
    assert.equal(escaping.status, 400);
    const device = await put(url, await tarGz([{ name: 'null', type: 'character-device' }]));
    assert.equal(device.status, 400);
    assert.match(((await device.json()) as { message: string }).message, /character-device/);
    const bomb = await put(url, await tarGz([{ name: 'big', body: '\0'.repeat(4 * 1024 * 1024) }]));
    assert.equal(bomb.status, 413, 'unpacks past --max-upload');
    const declared = await new Promise<number>((resolve, reject) => {
      const r = request(url, { method: 'PUT', headers: { 'content-length': String(2 * 1024 * 1024) } }, (res) => {
        resolve(res.statusCode!);
        res.resume();
        r.destroy();
      });
      r.on('error', reject);
      r.flushHeaders();
    });
    assert.equal(declared, 413, 'refused by its declared size, before a byte is read');
    assert.equal((await api('GET', `/templates/${req.json.templateID}/files/${hash}`)).json.present, false, 'nothing of a refused upload is kept');

    // A path through an uploaded symlink resolves inside the upload, never on the host.
    const linkHash = 'd'.repeat(64);
    const linkUrl = (await api('GET', `/templates/${req.json.templateID}/files/${linkHash}`)).json.url as string;
    const viaLink = await put(linkUrl, await tarGz([{ name: 'link', type: 'symlink', linkname: '/etc' }, { name: 'link/passwd', body: 'inside' }]));
    assert.equal(viaLink.status, 200);
    assert.equal(readFileSync(join(d.dataDir, 'e2b-template-files', linkHash, 'etc', 'passwd'), 'utf8'), 'inside');
    assert.match(readFileSync('/etc/passwd', 'utf8'), /^root:/);

    const good = await put(url, await tarGz([{ name: 'dir', type: 'directory' }, { name: 'dir/f.txt', body: 'fine' }]));
    assert.equal(good.status, 200, 'no API key on the upload');
    assert.deepEqual((await api('GET', `/templates/${req.json.templateID}/files/${hash}`)).json, { present: true });
    const noKey = await fetch(`${d.url}/templates/${req.json.templateID}/files/${hash}`);
    assert.equal(noKey.status, 401, 'the rest of the API still needs the key');
  });
});
