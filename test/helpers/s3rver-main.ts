// Child process: an s3rver (S3-compatible server) on 127.0.0.1, with one key pair from the environment.
// Prints {"port": N} once it listens. Run by test/helpers/s3-server.ts.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const S3rver = require('s3rver');
const { DUMMY_ACCOUNT } = require('s3rver/lib/models/account.js');

DUMMY_ACCOUNT.createKeyPair(process.env.S3_KEY, process.env.S3_SECRET);
DUMMY_ACCOUNT.revokeAccessKey('S3RVER');
const server = new S3rver({ address: '127.0.0.1', port: 0, directory: process.env.S3_DIR, silent: true, vhostBuckets: false, configureBuckets: (process.env.S3_BUCKETS ?? '').split(',').filter(Boolean).map((name) => ({ name })) });
const { port } = await server.run();
process.stdout.write(`${JSON.stringify({ port })}\n`);
// No graceful close: it would wait for the clients' keep-alive connections.
process.on('SIGTERM', () => process.exit(0));
