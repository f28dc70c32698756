/**
 * Opens a storage backend by kind (`--backend`, DESIGN §8). A new backend is one more
 * entry in `openers`; `BackendKind` follows from it.
 */
import { InvalidArgumentError } from '../core/errors.js';
import type { Backend, BackendOptions } from './backend.js';
import { LmdbBackend } from './lmdb.js';
import { MemoryBackend } from './memory.js';

const openers = {
  memory: async (): Promise<Backend> => new MemoryBackend(),
  lmdb: (options: BackendOptions): Promise<Backend> => LmdbBackend.open(options),
} satisfies Record<string, (options: BackendOptions) => Promise<Backend>>;

export type BackendKind = keyof typeof openers;

export const backendKinds: readonly BackendKind[] = Object.keys(openers) as BackendKind[];

export function isBackendKind(kind: string): kind is BackendKind {
  return Object.hasOwn(openers, kind);
}

/** Opens the backend of `kind`; an unknown kind is an `InvalidArgumentError` naming the known ones. */
export async function openBackend(kind: BackendKind, options: BackendOptions): Promise<Backend> {
  // `kind` may come from untyped input (a flag, an environment variable): check it.
  const name: string = kind;
  if (!isBackendKind(name)) {
    throw new InvalidArgumentError(`unknown backend '${name}'; expected one of: ${backendKinds.join(', ')}`);
  }
  return openers[name](options);
}
