import { CordonError } from '../errors/registry.js';
import type { BaseTemplate } from '../image/base-template.js';
import type { RootfsSource } from './types.js';

/** Where a sandbox's filesystem comes from: a template name or an image reference. */
export type PullPolicy = 'missing' | 'always' | 'never';

export interface SourceRequest {
  template?: string;
  image?: string;
  /** For images: pull when missing (default), always, or never. */
  pullPolicy?: PullPolicy;
}

export interface RootfsResolver {
  resolve(req: SourceRequest, progress?: (line: string) => void): Promise<RootfsSource>;
}

/** Templates by name (built from Dockerfiles); `base` is built in. */
export interface NamedTemplates {
  resolve(name: string, progress?: (line: string) => void): Promise<RootfsSource>;
}

/** The built-in `base` template, built templates and OCI images behind one interface. */
export class TemplateResolver implements RootfsResolver {
  constructor(private readonly base: BaseTemplate, private readonly images?: RootfsResolver, private readonly templates?: NamedTemplates) {}

  async resolve(req: SourceRequest, progress?: (line: string) => void): Promise<RootfsSource> {
    if (req.image) {
      if (!this.images) throw new CordonError('not_implemented', `image ${req.image}: images are not supported by this daemon yet; use --template base`);
      return this.images.resolve(req, progress);
    }
    const name = req.template ?? 'base';
    if (name !== 'base' && this.templates) return this.templates.resolve(name, progress);
    if (name !== 'base') throw new CordonError('not_found', `template ${name} does not exist; the built-in template is "base"`, { template: name });
    return this.base.ensure(progress);
  }
}
