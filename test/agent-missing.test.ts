// A daemon without an agent binary (the build found no Go): it starts, says so in its log, records an
// `agent` event on each sandbox and serves commands and files through the runtime's exec path.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';

let d: TestDaemon;

before(async () => {
  d = await startDaemon('agent-missing', { args: ['--agent-binary', `/var/lib/cordon-test/no-agent-${process.pid}/cordon-agent`] });
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d.cleanup();
});

test(`no agent binary: an event says so and the exec path serves the sandbox (${RUNTIMES[0]})`, async () => {
  assert.match(d.log(), /the sandbox agent .* is missing/);
  const s = await d.client.create({ runtime: RUNTIMES[0], labels: { suite: 'agent-missing' } });
  try {
    const events = (await s.events_()).filter((e) => e.type === 'agent').map((e) => e.message);
    assert.ok(events.some((m) => /no agent binary/.test(m)), JSON.stringify(events));
    const r = await s.exec(['sh', '-c', 'echo ok; cat /proc/$PPID/cmdline | tr "\\0" " "']);
    assert.equal(r.exit_code, 0);
    assert.match(r.stdout, /^ok\n/);
    assert.doesNotMatch(r.stdout, /\/\.cordon\/agent/, 'the command did not run under an agent');
    await s.files.write('/tmp/x.txt', 'data');
    assert.equal((await s.files.read('/tmp/x.txt')).toString(), 'data');
  } finally {
    await s.remove().catch(() => {});
  }
});
