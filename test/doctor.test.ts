// `cordon doctor` on this host: passes with every check explained; fails, naming the runtime, when
// the default runtime is hidden from PATH or pointed at a missing binary; a wedged runtime is cut
// off at the deadline and leaves nothing behind.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CLI } from './helpers/daemon.js';

interface Check {
  name: string;
  status: 'ok' | 'warn' | 'fail';
  required: boolean;
  detail: string;
  fix?: string;
}

const scratch = mkdtempSync(join(tmpdir(), 'doctor-test-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

function doctor(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, 'doctor', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

const leftovers = () => readdirSync(tmpdir()).filter((f) => f.startsWith('cordon-doctor-'));

test('passes on this host, each check with a detail and every non-ok one with a fix', async () => {
  const before = leftovers();
  const r = await doctor(['--json', '--data-dir', scratch]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const out = JSON.parse(r.stdout) as { ok: boolean; checks: Check[] };
  assert.equal(out.ok, true);
  const byName = new Map(out.checks.map((c) => [c.name, c]));
  for (const name of ['runtime runsc', 'runtime crun', 'overlayfs', 'cgroups', 'namespaces', 'nftables', 'disk', 'time sync', 'sandbox agent', 'helper busybox']) {
    assert.ok(byName.has(name), `check ${name} is reported`);
  }
  assert.equal(byName.get('runtime runsc')!.status, 'ok');
  assert.equal(byName.get('runtime runsc')!.required, true);
  assert.match(byName.get('runtime runsc')!.detail, /ran true/);
  assert.equal(byName.get('runtime crun')!.status, 'ok');
  assert.match(byName.get('cgroups')!.detail, /memory/);
  for (const c of out.checks) {
    assert.ok(c.detail.length > 0, `${c.name} says what it found`);
    if (c.status !== 'ok') assert.ok(c.fix && c.fix.length > 0, `${c.name} (${c.status}) says how to fix it`);
  }
  assert.deepEqual(leftovers(), before, 'the test sandboxes and their files are gone');
});

test('human output: a line per check and the verdict', async () => {
  const r = await doctor(['--data-dir', scratch, '--runtime', 'crun']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /✔ runtime crun/);
  assert.match(r.stdout, /this host can run cordon/);
});

test('the default runtime hidden from PATH: fails naming it, the others still pass', async () => {
  // A PATH with everything the usual directories hold except runsc.
  const bin = join(scratch, 'bin-without-runsc');
  mkdirSync(bin, { recursive: true });
  const seen = new Set<string>();
  for (const dir of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir)) {
      if (f === 'runsc' || seen.has(f)) continue;
      seen.add(f);
      symlinkSync(join(dir, f), join(bin, f));
    }
  }
  const r = await doctor(['--json', '--data-dir', scratch], { PATH: bin });
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const out = JSON.parse(r.stdout) as { ok: boolean; checks: Check[] };
  assert.equal(out.ok, false);
  const runsc = out.checks.find((c) => c.name === 'runtime runsc')!;
  assert.equal(runsc.status, 'fail');
  assert.match(runsc.detail, /runsc is not on PATH/);
  assert.match(runsc.fix!, /runsc/);
  assert.equal(out.checks.find((c) => c.name === 'runtime crun')!.status, 'ok', 'crun is found on the same PATH');
  const human = await doctor(['--data-dir', scratch], { PATH: bin });
  assert.equal(human.code, 1);
  assert.match(human.stdout, /not ready: runtime runsc failed/);
});

test('a missing --runtime-binary fails naming it; a non-default runtime missing is only a warning', async () => {
  const r = await doctor(['--json', '--data-dir', scratch, '--runtime', 'crun', '--runtime-binary', 'crun=/nonexistent/crun', '--runtime-binary', 'runc=/nonexistent/runc']);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const out = JSON.parse(r.stdout) as { ok: boolean; checks: Check[] };
  const crun = out.checks.find((c) => c.name === 'runtime crun')!;
  assert.equal(crun.status, 'fail');
  assert.match(crun.detail, /\/nonexistent\/crun/);
  const runc = out.checks.find((c) => c.name === 'runtime runc')!;
  assert.equal(runc.status, 'warn', 'runc is not the default runtime');
  assert.equal(runc.required, false);
});

test('a wedged runtime is cut off at --timeout and leaves nothing behind', async () => {
  const before = leftovers();
  const wedged = join(scratch, 'wedged-crun');
  writeFileSync(wedged, '#!/bin/sh\ncase "$*" in *--version*) echo "crun version 9"; exit 0;; esac\nexec sleep 600\n');
  chmodSync(wedged, 0o755);
  const r = await doctor(['--json', '--data-dir', scratch, '--runtime', 'crun', '--runtime-binary', `crun=${wedged}`, '--timeout', '2s']);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const crun = (JSON.parse(r.stdout) as { checks: Check[] }).checks.find((c) => c.name === 'runtime crun')!;
  assert.equal(crun.status, 'fail');
  assert.match(crun.detail, /wedged-crun could not run a sandbox: .*(did not finish|within)/);
  assert.deepEqual(leftovers(), before);
});

test('bad flags are refused with what to fix', async () => {
  const r = await doctor(['--runtime', 'docker']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--runtime must be one of runsc, crun, runc/);
  const b = await doctor(['--runtime-binary', 'crun=relative/path']);
  assert.match(b.stderr, /--runtime-binary must look like/);
});
