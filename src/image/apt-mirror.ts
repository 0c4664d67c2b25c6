import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

// The base template is built from the Debian mirror this host already uses, so a machine that can
// `apt-get install` can build it and no mirror address is baked into cordon.

interface Source {
  uris: string[];
  suites: string[];
  components: string[];
}

function parseDeb822(text: string): Source[] {
  return text
    .split(/\n\s*\n/)
    .map((block) => {
      const fields: Record<string, string> = {};
      for (const line of block.split('\n')) {
        const m = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
        if (m) fields[m[1].toLowerCase()] = m[2];
      }
      const split = (k: string) => (fields[k] ?? '').split(/\s+/).filter(Boolean);
      return { uris: split('uris'), suites: split('suites'), components: split('components') };
    })
    .filter((s) => s.uris.length > 0);
}

function parseOneLine(text: string): Source[] {
  const out: Source[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$/.exec(line);
    if (m) out.push({ uris: [m[1]], suites: [m[2]], components: m[3].split(/\s+/).filter(Boolean) });
  }
  return out;
}

export function hostSources(root = '/etc/apt'): Source[] {
  const out: Source[] = [];
  const tryRead = (p: string) => {
    try {
      return readFileSync(p, 'utf8');
    } catch {
      return '';
    }
  };
  out.push(...parseOneLine(tryRead(join(root, 'sources.list'))));
  let entries: string[] = [];
  try {
    entries = readdirSync(join(root, 'sources.list.d'));
  } catch {
    /* none */
  }
  for (const f of entries.sort()) {
    const text = tryRead(join(root, 'sources.list.d', f));
    if (f.endsWith('.sources')) out.push(...parseDeb822(text));
    else if (f.endsWith('.list')) out.push(...parseOneLine(text));
  }
  return out;
}

/** The mirror that serves `suite` with the main component, e.g. the host's Debian archive. */
export function debianMirror(suite: string, root = '/etc/apt'): string | undefined {
  for (const s of hostSources(root)) {
    if (s.suites.includes(suite) && s.components.includes('main')) return s.uris[0];
  }
  return undefined;
}
