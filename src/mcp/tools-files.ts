// Files of a sandbox: read (paged by offset), write, list, upload (base64 in, a resource link out),
// download (an embedded resource), and a resource template so clients can read any file by URI.
import { McpError, ErrorCode as McpErrorCode } from '@modelcontextprotocol/sdk/types.js';
import { ResourceTemplate, type McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { z } from 'zod';
import { CordonError } from '../errors/registry.js';
import type { Cordon } from '../sdk/client.js';
import type { FileInfo } from '../sdk/types.js';
import { asText, fileUri, readBounded, uriPart } from './file-io.js';
import { sandboxId, sandboxPath } from './inputs.js';
import { MCP_LIMITS } from './limits.js';
import { guarded, jsonResult } from './results.js';

const fileSummary = (f: FileInfo) => ({ name: f.name, path: f.path, type: f.type, size: f.size, permissions: f.permissions, owner: f.owner, modified_at: f.modified_at, symlink_target: f.symlink_target });

const base64Max = Math.ceil(MCP_LIMITS.writeMax / 3) * 4;
const mode = z.string().regex(/^[0-7]{3,4}$/, 'an octal mode like 644 or 0755').optional().describe('permission bits in octal, e.g. "755"');

function decoded(content: string, encoding: 'utf8' | 'base64'): Buffer {
  if (encoding === 'base64' && !/^[A-Za-z0-9+/]*={0,2}$/.test(content.replace(/\s+/g, ''))) throw new CordonError('invalid_argument', 'content: not valid base64; send standard base64 (A-Z a-z 0-9 + /) or use encoding "utf8"');
  const data = Buffer.from(content, encoding);
  if (data.length > MCP_LIMITS.writeMax) throw new CordonError('payload_too_large', `content is ${data.length} bytes; at most ${MCP_LIMITS.writeMax} per call: write the rest with append: true, or use the REST API (PUT /v1/sandboxes/ID/files/content) for big files`);
  return data;
}

/** A whole file as MCP resource contents, refused past the resource bound. */
async function resourceContents(cordon: Cordon, id: string, path: string) {
  const r = await readBounded(cordon, id, path, 0, MCP_LIMITS.resourceMax);
  if (r.more) throw new CordonError('payload_too_large', `${path} is ${r.info.size} bytes, more than the ${MCP_LIMITS.resourceMax} a resource may carry; page through it with read_file (offset, max_bytes)`, { path, size: r.info.size });
  const uri = fileUri(id, path);
  const text = asText(r.data);
  return text === undefined ? { uri, mimeType: 'application/octet-stream', blob: r.data.toString('base64') } : { uri, mimeType: 'text/plain', text };
}

const readInput = z
  .object({
    sandbox_id: sandboxId,
    path: sandboxPath,
    offset: z.number().int().min(0).optional().describe('byte to start at (default 0)'),
    max_bytes: z.number().int().min(1).max(MCP_LIMITS.readMax).optional().describe(`most bytes to return (default ${MCP_LIMITS.readDefault})`),
  })
  .strict();
const writeInput = z
  .object({
    sandbox_id: sandboxId,
    path: sandboxPath,
    content: z.string().max(base64Max).describe(`the file contents (at most ${MCP_LIMITS.writeMax} bytes)`),
    encoding: z.enum(['utf8', 'base64']).optional().describe('how content is encoded (default utf8)'),
    append: z.boolean().optional().describe('append instead of replacing'),
    mode,
  })
  .strict();
const uploadInput = z
  .object({ sandbox_id: sandboxId, path: sandboxPath, data_base64: z.string().max(base64Max).describe(`the file contents in base64 (at most ${MCP_LIMITS.writeMax} bytes decoded)`), mode })
  .strict();
const downloadInput = z.object({ sandbox_id: sandboxId, path: sandboxPath }).strict();
const listInput = z
  .object({ sandbox_id: sandboxId, path: sandboxPath.default('/'), depth: z.number().int().min(1).max(5).optional().describe('levels to descend (default 1)') })
  .strict();

export function registerFileTools(server: McpServer, cordon: Cordon): void {
  server.registerTool(
    'read_file',
    {
      title: 'Read a file',
      description: 'Read a file in a sandbox as text (binary files come back as base64), at most max_bytes from offset; a marker and next_offset say when more remains.',
      inputSchema: readInput,
      annotations: { readOnlyHint: true },
    },
    guarded(async (a: z.infer<typeof readInput>) => {
      const offset = a.offset ?? 0;
      const r = await readBounded(cordon, a.sandbox_id, a.path, offset, a.max_bytes ?? MCP_LIMITS.readDefault);
      const text = asText(r.data);
      const next = offset + r.data.length;
      const result = { path: a.path, size: r.info.size, offset, bytes: r.data.length, next_offset: r.more ? next : null, truncated: r.more, encoding: text === undefined ? 'base64' : 'utf8', content: text ?? r.data.toString('base64') };
      const marker = r.more ? `\n[cordon: file truncated: bytes ${offset}..${next} of ${r.info.size} shown; call read_file with offset ${next} for more]` : '';
      return { content: [{ type: 'text', text: `${result.content}${marker}` }], structuredContent: result };
    }),
  );

  server.registerTool(
    'write_file',
    { title: 'Write a file', description: 'Write (or append to) a file in a sandbox; missing parent directories are created.', inputSchema: writeInput, annotations: { destructiveHint: true } },
    guarded(async (a: z.infer<typeof writeInput>) => {
      const info = await cordon.sandbox(a.sandbox_id).files.write(a.path, decoded(a.content, a.encoding ?? 'utf8'), { append: a.append, mode: a.mode ? parseInt(a.mode, 8) : undefined, parents: true });
      return jsonResult(fileSummary(info), `wrote ${info.path} (${info.size} bytes)`);
    }),
  );

  server.registerTool(
    'upload_file',
    {
      title: 'Upload a file',
      description: 'Upload binary content (base64) to a path in a sandbox; answers with a link to the file as a resource (cordon://sandboxes/ID/files/PATH).',
      inputSchema: uploadInput,
      annotations: { destructiveHint: true },
    },
    guarded(async (a: z.infer<typeof uploadInput>) => {
      const info = await cordon.sandbox(a.sandbox_id).files.write(a.path, decoded(a.data_base64, 'base64'), { mode: a.mode ? parseInt(a.mode, 8) : undefined, parents: true });
      const uri = fileUri(a.sandbox_id, info.path);
      return {
        content: [
          { type: 'text', text: `uploaded ${info.path} (${info.size} bytes)` },
          { type: 'resource_link', uri, name: info.name, mimeType: 'application/octet-stream', size: info.size },
        ],
        structuredContent: { ...fileSummary(info), uri },
      };
    }),
  );

  server.registerTool(
    'download_file',
    {
      title: 'Download a file',
      description: `Download a whole file from a sandbox as an embedded resource (text, or base64 for binary), up to ${MCP_LIMITS.resourceMax} bytes; page through bigger files with read_file.`,
      inputSchema: downloadInput,
      annotations: { readOnlyHint: true },
    },
    guarded(async (a: z.infer<typeof downloadInput>) => {
      const resource = await resourceContents(cordon, a.sandbox_id, a.path);
      return { content: [{ type: 'resource', resource }] };
    }),
  );

  server.registerTool(
    'list_files',
    { title: 'List files', description: `List a directory in a sandbox (to a depth), at most ${MCP_LIMITS.listMax} entries.`, inputSchema: listInput, annotations: { readOnlyHint: true } },
    guarded(async (a: z.infer<typeof listInput>) => {
      const entries = await cordon.sandbox(a.sandbox_id).files.list(a.path, { depth: a.depth ?? 1 });
      const shown = entries.slice(0, MCP_LIMITS.listMax).map(fileSummary);
      const truncated = entries.length > shown.length;
      const lines = shown.map((f) => `${f.type === 'dir' ? 'd' : f.type === 'symlink' ? 'l' : '-'} ${String(f.size).padStart(10)} ${f.path}${f.symlink_target ? ` -> ${f.symlink_target}` : ''}`);
      if (truncated) lines.push(`[cordon: listing truncated: ${entries.length - shown.length} more entries; list a subdirectory or lower depth]`);
      return { content: [{ type: 'text', text: lines.join('\n') || '(empty)' }], structuredContent: { path: a.path, entries: shown, truncated } };
    }),
  );

  server.registerResource(
    'sandbox-file',
    new ResourceTemplate('cordon://sandboxes/{sandbox_id}/files/{+path}', { list: undefined }),
    { title: 'A file in a sandbox', description: `Any file of a sandbox, by id and absolute path (at most ${MCP_LIMITS.resourceMax} bytes)`, mimeType: 'application/octet-stream' },
    async (_uri, vars) => {
      try {
        const id = uriPart(vars.sandbox_id, 'the sandbox id');
        const path = `/${uriPart(vars.path, 'the path')}`;
        return { contents: [await resourceContents(cordon, id, path)] };
      } catch (e) {
        // Resource reads have no isError; the JSON-RPC error carries cordon's code in its data.
        const err = e instanceof CordonError ? e : new CordonError('internal', (e as Error).message);
        throw new McpError(err.status < 500 ? McpErrorCode.InvalidParams : McpErrorCode.InternalError, `${err.code}: ${err.message}`, err.toJSON());
      }
    },
  );
}
