import { appendFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

// What one sync knew of both sides after its last transfer, per file: the local size and mtime, the
// remote ETag. A change on one side is a difference from this; a change on both is a conflict.
// Each finished transfer is appended to a journal at once, so a push cut off midway (daemon killed,
// endpoint gone) is resumed by the next: finished files are not sent again nor taken for conflicts.

export interface ManifestEntry {
  size: number;
  /** Local mtime as "seconds.nanoseconds". */
  mtime: string;
  etag: string;
  /** MD5 of the content as it crossed (hex): tells a changed file from one whose mtime alone moved. */
  md5?: string;
}

type JournalLine = { k: string; e: ManifestEntry | null };

export class SyncManifest {
  private constructor(
    private readonly file: string,
    readonly entries: Map<string, ManifestEntry>,
  ) {}

  private static journal(file: string) {
    return `${file}.journal`;
  }

  static async load(file: string): Promise<SyncManifest> {
    const entries = new Map<string, ManifestEntry>();
    const base = await readFile(file, 'utf8').catch(() => '');
    if (base) for (const [k, e] of Object.entries(JSON.parse(base) as Record<string, ManifestEntry>)) entries.set(k, e);
    const journal = await readFile(SyncManifest.journal(file), 'utf8').catch(() => '');
    for (const line of journal.split('\n')) {
      if (!line) continue;
      let j: JournalLine;
      try {
        j = JSON.parse(line) as JournalLine;
      } catch {
        continue; // a line cut by a crash: that transfer is redone
      }
      if (j.e) entries.set(j.k, j.e);
      else entries.delete(j.k);
    }
    return new SyncManifest(file, entries);
  }

  get(key: string): ManifestEntry | undefined {
    return this.entries.get(key);
  }

  /** Record one finished transfer (or, with undefined, a file gone on both sides). */
  async set(key: string, e: ManifestEntry | undefined): Promise<void> {
    if (e) this.entries.set(key, e);
    else this.entries.delete(key);
    await mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
    await appendFile(SyncManifest.journal(this.file), `${JSON.stringify({ k: key, e: e ?? null })}\n`, { mode: 0o600 });
  }

  /** Fold the journal into the manifest (at the end of a sync). */
  async compact(): Promise<void> {
    await mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.tmp`;
    await writeFile(tmp, JSON.stringify(Object.fromEntries(this.entries)), { mode: 0o600 });
    await rename(tmp, this.file);
    await rm(SyncManifest.journal(this.file), { force: true });
  }
}
