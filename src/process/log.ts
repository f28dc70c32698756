/**
 * Structured logs: one JSON object per line (pino) to stderr and to `<dataDir>/node.log`,
 * so a node's history survives it.
 */
import { mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(options: { name: string; level: string; dataDir?: string; stderr?: boolean }): Logger {
  const streams: pino.StreamEntry[] = [];
  if (options.stderr !== false) streams.push({ level: options.level as pino.Level, stream: process.stderr });
  if (options.dataDir) {
    mkdirSync(options.dataDir, { recursive: true });
    // Opened here, synchronously: a destination still opening when the process exits (a
    // start that fails at once, e.g. a refused cluster token) makes pino's exit flush throw.
    const fd = openSync(join(options.dataDir, 'node.log'), 'a');
    streams.push({ level: options.level as pino.Level, stream: pino.destination({ fd, sync: false }) });
  }
  return pino({ name: options.name, level: options.level, base: { node: options.name } }, pino.multistream(streams));
}
