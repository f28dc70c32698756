/**
 * Issue 15: the dashboard's node actions for a cluster started by `dstore up`. `up` starts its
 * nameserver with DSTORE_UP_CONTROL=1 and an IPC channel; the nameserver asks its parent over
 * that channel (`process.send`) to kill, pause, resume, restart or spawn a node, and `up` runs
 * the same function as its shell command (src/cli/node-actions.ts) and answers. Without the
 * variable (a nameserver started by anything else) there is no UpControl and the dashboard
 * refuses actions (409).
 */

/** The environment variable `up` sets on its nameserver: its parent accepts node actions. */
export const UP_CONTROL_ENV = 'DSTORE_UP_CONTROL';
/** Bound on waiting for `up`'s answer, in ms (a restart waits for the node to listen). */
export const UP_ACTION_TIMEOUT_MS = 15_000;

/** What the dashboard may ask `up` to do (the shell's commands of the same names). */
export const NODE_ACTIONS = ['kill', 'stop', 'pause', 'resume', 'restart', 'spawn'] as const;
export type NodeAction = (typeof NODE_ACTIONS)[number];

export function isNodeAction(x: unknown): x is NodeAction {
  return typeof x === 'string' && (NODE_ACTIONS as readonly string[]).includes(x);
}

/**
 * `done`: it happened; `warning`: it happened, with a remark (e.g. killed after the stop timed
 * out); `refused`: nothing was done (no such node, not running, not paused); `failed`: it was
 * tried and did not work.
 */
export interface NodeActionResult {
  readonly outcome: 'done' | 'warning' | 'refused' | 'failed';
  readonly message: string;
}

/** Nameserver → `up`. */
export interface UpActionRequest {
  readonly type: 'dstore-up-action';
  readonly id: number;
  readonly action: NodeAction;
  /** The node (absent for `spawn`). */
  readonly node?: string;
}

/** `up` → nameserver. */
export interface UpActionReply extends NodeActionResult {
  readonly type: 'dstore-up-action-result';
  readonly id: number;
}

export function isUpActionRequest(m: unknown): m is UpActionRequest {
  if (typeof m !== 'object' || m === null) return false;
  const r = m as Record<string, unknown>;
  return (
    r.type === 'dstore-up-action' &&
    typeof r.id === 'number' &&
    isNodeAction(r.action) &&
    (r.node === undefined || typeof r.node === 'string')
  );
}

function isUpActionReply(m: unknown): m is UpActionReply {
  if (typeof m !== 'object' || m === null) return false;
  const r = m as Record<string, unknown>;
  return (
    r.type === 'dstore-up-action-result' &&
    typeof r.id === 'number' &&
    typeof r.message === 'string' &&
    (r.outcome === 'done' || r.outcome === 'warning' || r.outcome === 'refused' || r.outcome === 'failed')
  );
}

/** The nameserver's side: asks `up` and waits for its answer, bounded. */
export class UpControl {
  private nextId = 1;
  private readonly pending = new Map<number, (r: NodeActionResult) => void>();
  private readonly onMessage = (m: unknown): void => {
    if (!isUpActionReply(m)) return;
    const resolve = this.pending.get(m.id);
    if (resolve) resolve({ outcome: m.outcome, message: m.message });
  };

  constructor(
    private readonly channel: NodeJS.Process = process,
    private readonly timeoutMs = UP_ACTION_TIMEOUT_MS,
  ) {}

  /** The parent's control when `up` started this process (DSTORE_UP_CONTROL=1 and an IPC channel). */
  static fromEnv(): UpControl | undefined {
    return process.env[UP_CONTROL_ENV] === '1' && typeof process.send === 'function' ? new UpControl() : undefined;
  }

  async request(action: NodeAction, node?: string): Promise<NodeActionResult> {
    const send = this.channel.send?.bind(this.channel);
    if (send === undefined || !this.channel.connected)
      return { outcome: 'failed', message: 'dstore up, which started this cluster, is gone (no IPC channel)' };
    const id = this.nextId++;
    if (this.pending.size === 0) this.channel.on('message', this.onMessage);
    let timer: NodeJS.Timeout | undefined;
    try {
      return await new Promise<NodeActionResult>((resolve) => {
        this.pending.set(id, resolve);
        timer = setTimeout(
          () =>
            resolve({
              outcome: 'failed',
              message: `dstore up did not answer within ${this.timeoutMs / 1000} s (${action}${node ? ` ${node}` : ''})`,
            }),
          this.timeoutMs,
        );
        const request: UpActionRequest = {
          type: 'dstore-up-action',
          id,
          action,
          ...(node === undefined ? {} : { node }),
        };
        send(request, undefined, undefined, (err: Error | null) => {
          if (err) resolve({ outcome: 'failed', message: `could not reach dstore up: ${err.message}` });
        });
      });
    } finally {
      clearTimeout(timer);
      this.pending.delete(id);
      if (this.pending.size === 0) this.channel.off('message', this.onMessage);
    }
  }
}
