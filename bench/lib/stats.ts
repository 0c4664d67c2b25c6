// Percentiles and a printed row, shared by every benchmark.

export function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

export function row(name: string, xs: number[], unit = 'ms'): string {
  return `${name.padEnd(44)} p50 ${pct(xs, 50).toFixed(1).padStart(8)} ${unit}   p95 ${pct(xs, 95).toFixed(1).padStart(8)} ${unit}   (n=${xs.length})`;
}

export function ratio(a: number[], b: number[]): string {
  return `p50 ${(pct(a, 50) / pct(b, 50)).toFixed(2)}x   p95 ${(pct(a, 95) / pct(b, 95)).toFixed(2)}x`;
}

/** A row with p50, p90 and p99 (for figures whose tail matters). */
export function rowTail(name: string, xs: number[], unit = 'ms'): string {
  const f = (p: number) => pct(xs, p).toFixed(1).padStart(8);
  return `${name.padEnd(48)} p50 ${f(50)} ${unit}  p90 ${f(90)} ${unit}  p99 ${f(99)} ${unit}  (n=${xs.length})`;
}
