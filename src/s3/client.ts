import { S3Client } from '@aws-sdk/client-s3';
import type { S3Credentials } from './credentials.js';
import type { S3SyncSpec } from './sync-spec.js';

/** Deadline of one S3 request (a part of a multipart upload counts as one). */
const REQUEST_TIMEOUT_MS = 120_000;

/**
 * An S3 client for one sync. Checksums only where the API requires them: S3-compatible servers
 * differ in what they accept of the newer trailing-checksum encodings.
 */
export function s3ClientFor(spec: Pick<S3SyncSpec, 'endpoint' | 'region' | 'pathStyle'>, creds: S3Credentials): S3Client {
  return new S3Client({
    region: spec.region,
    ...(spec.endpoint ? { endpoint: spec.endpoint } : {}),
    forcePathStyle: spec.pathStyle,
    credentials: { accessKeyId: creds.accessKeyId, secretAccessKey: creds.secretAccessKey, ...(creds.sessionToken ? { sessionToken: creds.sessionToken } : {}) },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 3,
    requestHandler: { requestTimeout: REQUEST_TIMEOUT_MS, connectionTimeout: 10_000 },
  });
}
