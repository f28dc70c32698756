/**
 * Structured logs (pino), one file per node: `<dataDir>/node.log`, one JSON object per line,
 * rotated by size (node.log → node.log.1 → … → node.log.3 at 10 MiB each), so a node's
 * history survives it and its disk use is bounded.
 *
 * stderr gets the same lines only when nobody else keeps them: a node started by `dstore up`
 * (an IPC channel to its parent) writes none there, since up sends its stderr to a file
 * beside node.log (issue 9: the two files held every line twice; that file now only holds
 * what is not a log line, such as a crash's stack trace). Run on its own, a node writes to
 * stderr too (for journald or the terminal): readable lines on a terminal
 * (`12:00:01.234 INFO  s1: registered partitions=16`), JSON otherwise.
 */
import { existsSync, mkdirSync, openSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';

export type { Logger };

/** Write errors of a full or failing disk (or a closed pipe) on stderr: the line is lost, not the process. */
const DISK_WRITE_ERRORS = new Set(['ENOSPC', 'EIO', 'EROFS', 'EDQUOT', 'EPIPE']);
let stderrGuarded = false;

/**
 * Issue 9: stderr redirected to a file (`dstore up`, the chaos runner) on a full disk fails
 * its writes with ENOSPC, and Node turns that into an 'error' event that, unhandled, exits the
 * process. Such a line is dropped (node.log says it could not write, or catches up later);
 * any other stderr error stays fatal.
 */
function guardStderr(): void {
  if (stderrGuarded) return;
  stderrGuarded = true;
  process.stderr.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== undefined && DISK_WRITE_ERRORS.has(err.code)) return;
    throw err;
  });
}

/** Size of node.log at which it is rotated, in bytes. */
export const LOG_ROTATE_BYTES = 10 * 1024 * 1024;
/** Rotated files kept: node.log.1 (newest) … node.log.3. */
export const LOG_ROTATE_KEEP = 3;

/** What a pino multistream needs of a destination. */
interface LogSink {
  write(chunk: string): void;
  flushSync?(): void;
}

/**
 * A log file rotated by size: when it passes `maxBytes`, file.(k) becomes file.(k+1) (the
 * oldest is overwritten), the file becomes file.1, and a new file is opened. Lines already
 * queued for the old file land in the renamed one, so none is lost or split.
 */
export class RotatingFile implements LogSink {
  private current: pino.DestinationStream & { flushSync?(): void; end?(): void };
  private bytes: number;

  constructor(
    readonly path: string,
    private readonly maxBytes = LOG_ROTATE_BYTES,
    private readonly keep = LOG_ROTATE_KEEP,
  ) {
    if (!(keep >= 1 && maxBytes >= 1))
      throw new Error(`log rotation needs keep >= 1 and maxBytes >= 1 (got ${keep}, ${maxBytes})`);
    this.current = RotatingFile.open(path);
    this.bytes = statSync(path).size;
  }

  // Opened here, synchronously: a destination still opening when the process exits (a start
  // that fails at once, e.g. a refused cluster token) makes pino's exit flush throw. Written
  // synchronously: log lines are events, not per request, and an asynchronous destination's
  // flushSync (pino's, at exit) writes what is buffered while an earlier write is still in
  // flight, so the last lines could land out of order (seen in test/unit/log.test.ts).
  private static open(path: string): pino.DestinationStream & { flushSync?(): void; end?(): void } {
    const file = pino.destination({ fd: openSync(path, 'a'), sync: true });
    // A full or failing disk (issue 9) must not kill the process: sonic-boom emits 'error'
    // for a failed write (ENOSPC, EIO), which unhandled is an uncaught exception. Say so once
    // on stderr; the lines stay buffered and the file catches up when a write succeeds.
    let failing = false;
    file.on('error', (err: NodeJS.ErrnoException) => {
      if (failing) return;
      failing = true;
      process.stderr.write(
        `cannot write ${path} (${err.code ?? err.message}); its lines are kept until a write succeeds\n`,
      );
    });
    file.on('write', () => {
      failing = false;
    });
    return file;
  }

  write(chunk: string): void {
    this.current.write(chunk);
    this.bytes += Buffer.byteLength(chunk);
    if (this.bytes >= this.maxBytes) this.rotate();
  }

  flushSync(): void {
    this.current.flushSync?.();
  }

  private rotate(): void {
    for (let k = this.keep - 1; k >= 1; k--) {
      const from = `${this.path}.${k}`;
      if (existsSync(from)) renameSync(from, `${this.path}.${k + 1}`);
    }
    renameSync(this.path, `${this.path}.1`);
    const old = this.current;
    this.current = RotatingFile.open(this.path);
    this.bytes = 0;
    old.end?.(); // flushes what it queued (into the renamed file), then closes
  }
}

const LEVEL_NAMES: Readonly<Record<number, string>> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};
const LEVEL_COLOURS: Readonly<Record<number, number>> = { 10: 2, 20: 2, 30: 32, 40: 33, 50: 31, 60: 31 };
const OMITTED = new Set(['level', 'time', 'msg', 'node', 'name', 'pid', 'hostname']);

/** One JSON log line as a person reads it: `12:00:01.234 INFO  s1: message key=value …`. */
export function prettyLine(json: string, colour: boolean): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`; // not JSON (never from pino): as it is
  }
  const level = typeof o.level === 'number' ? o.level : 30;
  const time = typeof o.time === 'number' ? new Date(o.time).toISOString().slice(11, 23) : '';
  const name = (LEVEL_NAMES[level] ?? String(level)).padEnd(5);
  const shownLevel = colour ? `\x1b[${LEVEL_COLOURS[level] ?? 0}m${name}\x1b[0m` : name;
  const fields = Object.entries(o)
    .filter(([k]) => !OMITTED.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/[\s"=]/.test(v) && v !== '' ? v : JSON.stringify(v)}`);
  const node = typeof o.node === 'string' ? `${o.node}: ` : '';
  const msg = typeof o.msg === 'string' ? o.msg : '';
  return `${time} ${shownLevel} ${node}${msg}${fields.length > 0 ? ` ${fields.join(' ')}` : ''}\n`;
}

/** stderr as readable lines (a terminal). */
function prettyStderr(colour: boolean): LogSink {
  return {
    write(chunk: string): void {
      process.stderr.write(
        chunk
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => prettyLine(l, colour))
          .join(''),
      );
    },
  };
}

export interface LoggerOptions {
  readonly name: string;
  readonly level: string;
  /** Where node.log goes; no file without it. */
  readonly dataDir?: string;
  /** Also log to stderr (default: unless started by `dstore up`, which keeps node.log). */
  readonly stderr?: boolean;
}

export function createLogger(options: LoggerOptions): Logger {
  const streams: pino.StreamEntry[] = [];
  // Every stream takes every line the logger lets through, so `logger.level = …` (a live
  // switch, issue 15) changes what is written without rebuilding the streams.
  const level: pino.Level = 'trace';
  let file: RotatingFile | undefined;
  if (options.dataDir) {
    mkdirSync(options.dataDir, { recursive: true });
    file = new RotatingFile(join(options.dataDir, 'node.log'));
    streams.push({ level, stream: file });
  }
  // Started by `dstore up` (an IPC channel): node.log is the one copy; stderr stays for crashes.
  const toStderr = options.stderr ?? !(process.send !== undefined && file !== undefined);
  if (toStderr) {
    guardStderr();
    const tty = Boolean(process.stderr.isTTY);
    const colour = tty && (process.env.NO_COLOR === undefined || process.env.NO_COLOR === '');
    streams.push({ level, stream: tty ? prettyStderr(colour) : process.stderr });
  }
  return pino({ name: options.name, level: options.level, base: { node: options.name } }, pino.multistream(streams));
}
