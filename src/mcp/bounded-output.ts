// A byte stream kept within a bound: its head and its tail, with a marker saying how much of the
// middle was left out. A command printing gigabytes costs this much memory and no more.

export const TRUNCATION_MARKER = '[cordon: output truncated';

export class BoundedOutput {
  private head: Buffer[] = [];
  private headBytes = 0;
  private tail: Buffer[] = [];
  private tailBytes = 0;
  /** Every byte seen, kept or not. */
  total = 0;

  constructor(private readonly limit: number) {}

  private get headMax() {
    return Math.ceil(this.limit / 2);
  }
  private get tailMax() {
    return this.limit - this.headMax;
  }

  push(chunk: Buffer): void {
    this.total += chunk.length;
    if (this.headBytes < this.headMax) {
      const take = Math.min(chunk.length, this.headMax - this.headBytes);
      this.head.push(chunk.subarray(0, take));
      this.headBytes += take;
      chunk = chunk.subarray(take);
    }
    if (!chunk.length || this.tailMax === 0) return;
    // Copy: a subarray would pin the whole chunk it came from.
    this.tail.push(Buffer.from(chunk.subarray(Math.max(0, chunk.length - this.tailMax))));
    this.tailBytes += Math.min(chunk.length, this.tailMax);
    while (this.tailBytes > this.tailMax) {
      const extra = this.tailBytes - this.tailMax;
      const first = this.tail[0];
      if (first.length <= extra) {
        this.tail.shift();
        this.tailBytes -= first.length;
      } else {
        this.tail[0] = first.subarray(extra);
        this.tailBytes -= extra;
      }
    }
  }

  get truncated(): boolean {
    return this.total > this.headBytes + this.tailBytes;
  }

  /** The kept bytes as text; when something was left out, a marker between head and tail says what. */
  text(what: string): string {
    const head = Buffer.concat(this.head).toString('utf8');
    if (!this.truncated) return head + Buffer.concat(this.tail).toString('utf8');
    const omitted = this.total - this.headBytes - this.tailBytes;
    return `${head}\n${TRUNCATION_MARKER}: ${omitted} of ${this.total} bytes of ${what} omitted; the first ${this.headBytes} and last ${this.tailBytes} are shown. Redirect the output to a file and page through it with read_file, or raise max_output_bytes]\n${Buffer.concat(this.tail).toString('utf8')}`;
  }
}
