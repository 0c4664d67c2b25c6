export { Cordon, Sandbox, SandboxFiles, type PortForwardInfo, type StartProcessOptions } from './client.js';
export { ProcessSocket } from './process-stream.js';
export type { ClientOptions } from './http.js';
export { CordonError, ERROR_KINDS, type ErrorCode } from '../errors/registry.js';
export type * from './types.js';
export { Images, type ImageInfo, type PullProgress, type PullOptions } from './images.js';
export { Templates, type TemplateInfo, type BuildEvent, type BuildOptions } from './templates.js';
export type { InterceptDecision, InterceptedRequest, InterceptHandler, Interceptor } from './callbacks.js';
export { Volumes, VolumeFiles, type VolumeInfo, type VolumeEntry } from './volumes.js';
