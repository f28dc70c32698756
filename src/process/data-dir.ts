/**
 * One owner per data directory (issue 9). Every process that owns a data dir — the
 * nameserver, a storage server, `dstore up` (its parent dir; each child locks its own
 * sub-dir) — first checks the path (`prepareDataDir`) and then takes an exclusive lock on it
 * for its lifetime (`lockDataDir`). A second process on the same directory refuses to start
 * with one line naming the directory and the pid that holds it: LMDB lets several processes
 * open one environment, and two nameservers on one `cluster-map.json`, or two storage
 * servers on one log, overwrite each other's acknowledged writes.
 *
 * The lock is a listening Unix socket the kernel releases when the process dies, so a crash
 * (SIGKILL) never leaves a stale lock that blocks a restart:
 *
 * - Linux: a socket in the abstract namespace, `\0dstore-lock-<sha256(realpath)>`. bind() is
 *   atomic and the name disappears with the last descriptor of the socket, i.e. at the
 *   holder's death. Abstract names are per network namespace: two processes in different
 *   namespaces (containers, `ip netns exec`) do not see each other's lock.
 * - Elsewhere: a socket file `<tmpdir>/dstore-lock-<sha256(realpath)[:40]>.sock`. A file
 *   whose connect() is refused belongs to a dead holder and is replaced; two processes that
 *   find the same stale file in the same instant may both win (a narrow race the abstract
 *   namespace does not have).
 *
 * The holder answers every connection with one JSON line (its pid and role), which is how
 * the refused process names it. Node has no flock(2); see docs/dependencies.md.
 */
import { createHash } from 'node:crypto';
import { accessSync, constants, mkdirSync, realpathSync, statSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A data dir that cannot be used: bad path, not creatable, not writable, held by another process.
 * Bad input (exit code 2).
 */
export class DataDirError extends Error {
  constructor(
    message: string,
    readonly dataDir: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'DataDirError';
  }
}

/** The data dir is locked by another live process. */
export class DataDirLockedError extends DataDirError {
  constructor(
    dataDir: string,
    /** Undefined when the holder did not answer (paused, say). */
    readonly holderPid: number | undefined,
    readonly holderRole: string | undefined,
  ) {
    const who =
      holderPid === undefined
        ? 'a process that does not answer (paused?)'
        : `pid ${holderPid}${holderRole ? ` (${holderRole})` : ''}`;
    super(
      `data dir ${dataDir} is in use by another dstore process, ${who}; stop it first or choose another --data-dir`,
      dataDir,
    );
    this.name = 'DataDirLockedError';
  }
}

export type LockMode = 'abstract' | 'socket-file';

export interface DataDirLock {
  /** The real path that is locked. */
  readonly dataDir: string;
  readonly mode: LockMode;
  /** Gives the lock up (the process exiting does the same). Idempotent. */
  release(): Promise<void>;
}

/** Bound on reading the holder's answer, in ms. */
const HOLDER_ANSWER_TIMEOUT_MS = 1000;
/** Largest answer read from a holder. */
const HOLDER_ANSWER_MAX_BYTES = 1024;
/** Attempts to take a lock whose holder vanished between our bind and our connect. */
const LOCK_ATTEMPTS = 5;
/** Deepest path created: bounds the walk up to an existing ancestor. */
const MAX_PATH_DEPTH = 256;

const defaultMode = (): LockMode => (process.platform === 'linux' ? 'abstract' : 'socket-file');

/** The absolute path of a --data-dir value; an empty one is refused (resolve('') is the current directory). */
export function dataDirPath(dir: string, flag = '--data-dir'): string {
  if (dir.trim() === '')
    throw new DataDirError(`${flag} is empty; give a directory (an empty value would mean the current directory)`, dir);
  return resolve(dir);
}

/**
 * Checks `dir` and creates it (and missing parents) if needed; returns its real path.
 * Refuses an empty path (it would mean the current directory), a path that exists and is
 * not a directory, one that cannot be created (`/proc/dstore`: Node's recursive mkdir spins
 * forever there, so each component is created on its own) or written. `flag` names the
 * setting in messages.
 */
export function prepareDataDir(dir: string, flag = '--data-dir'): string {
  const path = dataDirPath(dir, flag);
  if (dir.includes('\0')) throw new DataDirError(`${flag} ${JSON.stringify(dir)} contains a NUL byte`, dir);
  const missing: string[] = [];
  let at = path;
  for (let depth = 0; ; depth++) {
    if (depth > MAX_PATH_DEPTH)
      throw new DataDirError(`${flag} ${path}: more than ${MAX_PATH_DEPTH} levels to create`, path);
    const kind = statKind(at, flag);
    if (kind === 'dir') break;
    if (kind === 'other') {
      throw new DataDirError(
        `${flag} ${path}: ${at === path ? 'it exists and is not a directory' : `${at} is not a directory`}`,
        path,
      );
    }
    missing.push(at);
    const parent = dirname(at);
    // Unreachable: '/' exists.
    if (parent === at) throw new DataDirError(`${flag} ${path}: no existing ancestor directory`, path);
    at = parent;
  }
  for (const p of missing.reverse()) {
    try {
      mkdirSync(p);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && statKind(p, flag) === 'dir') continue; // created meanwhile by someone else
      throw new DataDirError(`${flag} ${path}: cannot create ${p} (${code ?? (err as Error).message})`, path, {
        cause: err,
      });
    }
  }
  try {
    accessSync(path, constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new DataDirError(
      `${flag} ${path} is not writable (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      path,
      { cause: err },
    );
  }
  return realpathSync(path);
}

function statKind(path: string, flag: string): 'dir' | 'other' | 'missing' {
  try {
    return statSync(path).isDirectory() ? 'dir' : 'other';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'missing';
    if (code === 'ENOTDIR') return 'other';
    throw new DataDirError(`${flag} ${path}: ${code ?? (err as Error).message}`, path, { cause: err });
  }
}

/** The socket name (abstract, with its leading NUL) or path that locks `realDir`. */
export function lockAddress(realDir: string, mode: LockMode): string {
  const hash = createHash('sha256').update(realDir).digest('hex');
  return mode === 'abstract' ? `\0dstore-lock-${hash}` : join(tmpdir(), `dstore-lock-${hash.slice(0, 40)}.sock`);
}

/**
 * Takes the exclusive lock of `dataDir` (prepared with `prepareDataDir`) for this process,
 * or throws DataDirLockedError naming the holder. `role` is what a refused process is told
 * about us, e.g. "storage server s1".
 */
export async function lockDataDir(
  dataDir: string,
  role: string,
  options: { mode?: LockMode } = {},
): Promise<DataDirLock> {
  const realDir = realpathSync(dataDir);
  const mode = options.mode ?? defaultMode();
  const address = lockAddress(realDir, mode);
  const answer = `${JSON.stringify({ dstore: 'data-dir-lock', pid: process.pid, role, dataDir: realDir })}\n`;
  for (let attempt = 1; attempt <= LOCK_ATTEMPTS; attempt++) {
    const server = createServer((socket) => {
      socket.on('error', () => socket.destroy()); // a reader that went away: nothing to do
      socket.end(answer);
    });
    const bound = await listen(server, address);
    if (bound === 'ok') {
      // The lock must never keep the process alive on its own.
      server.unref();
      let released: Promise<void> | undefined;
      return {
        dataDir: realDir,
        mode,
        release: () => (released ??= new Promise<void>((r) => server.close(() => r()))),
      };
    }
    const holder = await askHolder(address);
    if (holder.kind === 'answered') throw new DataDirLockedError(realDir, holder.pid, holder.role);
    if (holder.kind === 'silent') throw new DataDirLockedError(realDir, undefined, undefined);
    // Nobody listens: the holder died after our bind (abstract), or left a stale file.
    if (mode === 'socket-file') {
      try {
        unlinkSync(address);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
          throw new DataDirError(
            `cannot remove the stale lock ${address} of ${realDir}: ${(err as Error).message}`,
            realDir,
            { cause: err },
          );
      }
    }
  }
  throw new DataDirError(
    `could not lock data dir ${realDir} in ${LOCK_ATTEMPTS} attempts (its holder keeps changing)`,
    realDir,
  );
}

/** `prepareDataDir` and `lockDataDir` in one step; returns the lock (its `dataDir` is the real path). */
export async function openDataDir(dir: string, role: string, flag = '--data-dir'): Promise<DataDirLock> {
  return lockDataDir(prepareDataDir(dir, flag), role);
}

function listen(server: Server, address: string): Promise<'ok' | 'in use'> {
  return new Promise((resolvePromise, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      server.off('listening', onListening);
      if (err.code === 'EADDRINUSE') resolvePromise('in use');
      else
        reject(
          new DataDirError(`cannot lock the data dir (socket ${JSON.stringify(address)}): ${err.message}`, address, {
            cause: err,
          }),
        );
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolvePromise('ok');
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(address);
  });
}

type HolderAnswer =
  | { readonly kind: 'answered'; readonly pid: number; readonly role: string | undefined }
  | { readonly kind: 'silent' }
  | { readonly kind: 'nobody' };

/** Connects to the lock's socket and reads the holder's pid, bounded in time and size. */
function askHolder(address: string): Promise<HolderAnswer> {
  return new Promise((resolvePromise) => {
    const socket = createConnection(address);
    let text = '';
    let done = false;
    const finish = (a: HolderAnswer): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolvePromise(a);
    };
    const parse = (): HolderAnswer => {
      try {
        const v = JSON.parse(text.split('\n')[0] ?? '') as { dstore?: unknown; pid?: unknown; role?: unknown };
        if (v.dstore === 'data-dir-lock' && typeof v.pid === 'number' && Number.isSafeInteger(v.pid)) {
          return { kind: 'answered', pid: v.pid, role: typeof v.role === 'string' ? v.role.slice(0, 200) : undefined };
        }
      } catch {
        // Not our answer: something holds the name but says nothing we understand.
      }
      return { kind: 'silent' };
    };
    const timer = setTimeout(() => finish(parse()), HOLDER_ANSWER_TIMEOUT_MS);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (text.includes('\n') || text.length > HOLDER_ANSWER_MAX_BYTES) finish(parse());
    });
    socket.on('end', () => finish(parse()));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // Refused or gone: no live holder (a stale socket file, or a holder that just died).
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') finish({ kind: 'nobody' });
      else finish(text ? parse() : { kind: 'silent' });
    });
  });
}

/**
 * Waits until nobody holds the lock of `dir` (an existing directory), polling every 100 ms for
 * at most `timeoutMs`; then throws the last DataDirLockedError. `onWait` is told once who is
 * waited for. `dstore up` uses it for its children's dirs: after `up` itself was SIGKILLed,
 * its children close by themselves (their parent is gone) and a restart waits for them.
 */
export async function waitUntilUnlocked(
  dir: string,
  timeoutMs: number,
  onWait: (err: DataDirLockedError) => void,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let told = false;
  for (let attempt = 0; attempt < 100_000; attempt++) {
    try {
      const lock = await lockDataDir(dir, 'dstore up (checking)');
      await lock.release();
      return;
    } catch (err) {
      if (!(err instanceof DataDirLockedError) || Date.now() >= deadline) throw err;
      if (!told) onWait(err);
      told = true;
    }
    await sleep(100);
  }
}
