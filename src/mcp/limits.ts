// Bounds of the MCP surface. Model contexts are small and MCP messages travel whole (no streaming
// of a tool result), so every answer is cut to a size the caller can raise only up to a hard cap.

const KiB = 1024;
const MiB = 1024 * KiB;

export const MCP_LIMITS = {
  /** Command output kept per stream (stdout, stderr) unless the call asks for another size. */
  outputDefault: 64 * KiB,
  outputMax: 1 * MiB,
  /** File bytes returned by read_file unless the call asks for another size. */
  readDefault: 256 * KiB,
  readMax: 4 * MiB,
  /** A file downloaded whole, as a resource (base64 in the answer). */
  resourceMax: 4 * MiB,
  /** Decoded bytes one write/upload call may carry (base64 grows it by a third on the wire). */
  writeMax: 4 * MiB,
  /** Longest wait of read_process_output for more output of a running process. */
  waitMaxMs: 30_000,
  waitDefaultMs: 1_000,
  /** Entries of one list_files answer. */
  listMax: 2_000,
  /** Body of one request to /mcp: a write of writeMax in base64, plus the JSON-RPC envelope. */
  httpBodyMax: 8 * MiB,
} as const;
