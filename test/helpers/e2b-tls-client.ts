// The official SDK used the way a user with wildcard DNS and TLS in front would: https everywhere, no
// sandboxUrl, and not even the domain: the SDK takes it from create's answer (the daemon's --domain).
// Run as a child with NODE_EXTRA_CA_CERTS set to the test CA (Node reads it only at start-up); the
// CONNECT relay stands in for DNS and refuses any other name. Prints one JSON line.
import { Sandbox } from 'e2b';
import { ProxyAgent, fetch } from 'undici';

const { apiKey, domain, proxy } = JSON.parse(process.argv[2]) as { apiKey: string; domain: string; proxy: string };
const opts = { apiKey, apiUrl: `https://api.${domain}`, proxy, timeoutMs: 120_000 };
const out: Record<string, unknown> = {};
const sb = await Sandbox.create(opts);
try {
  out.sandboxId = sb.sandboxId;
  out.sandboxDomain = sb.sandboxDomain;
  out.echo = (await sb.commands.run('echo over-tls')).stdout;
  await sb.files.write('/tmp/srv/index.html', 'hello through the TLS front');
  await sb.commands.run('cd /tmp/srv && python3 -m http.server 8000', { background: true });
  out.host = sb.getHost(8000);
  const agent = new ProxyAgent({ uri: proxy, proxyTunnel: true });
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const res = await fetch(`https://${sb.getHost(8000)}/index.html`, { dispatcher: agent }).catch(() => undefined);
    if (res?.status === 200) {
      out.page = await res.text();
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  await agent.close();
} finally {
  await sb.kill().catch(() => {});
}
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(0);
