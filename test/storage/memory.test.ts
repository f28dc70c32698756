/**
 * The memory backend passes the backend conformance suite (DESIGN §8), and openBackend
 * opens it by kind and refuses unknown kinds with a typed error.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../src/core/errors.js';
import { MemoryBackend } from '../../src/storage/memory.js';
import { openBackend, type BackendKind } from '../../src/storage/open.js';
import { backendConformance } from './conformance.js';

backendConformance('memory', async () => {
  const backend = new MemoryBackend();
  return { backend, cleanup: () => backend.close() };
});

test('openBackend opens the memory backend and refuses an unknown kind', async () => {
  const backend = await openBackend('memory', {});
  assert.equal(backend.kind, 'memory');
  await backend.close();
  await assert.rejects(openBackend('rocksdb' as BackendKind, {}), (err: unknown) => {
    assert.ok(err instanceof InvalidArgumentError);
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.message, /unknown backend 'rocksdb'; expected one of: memory, lmdb/);
    return true;
  });
});
