/**
 * A follower among elected nameservers (issue 12), as pure decisions shared by the driver
 * (src/control/elected-nameserver.ts) and the simulator (test/sim/elected-node.ts): which calls
 * it answers from the map stored in the election service, how it answers them, and the
 * NOT_LEADER it refuses the others with.
 */
import { NotLeaderError } from '../core/errors.js';
import type { PersistedMap } from '../core/nameserver/nameserver.js';
import { assertNever } from '../core/types.js';
import type { NameserverRequest } from '../rpc/messages.js';
import { type NameserverHostOptions, type NameserverReply, NameserverHost } from './host.js';

/**
 * `fromStoredMap`: `map` and `nodes`, answered from the map in the election service (never a
 * map newer than it); `refuse`: the calls that would change or confirm the map (NOT_LEADER);
 * `leader`: who leads, which everyone answers.
 */
export type FollowerPlan = 'fromStoredMap' | 'refuse' | 'leader';

export function followerPlan(req: NameserverRequest): FollowerPlan {
  switch (req.t) {
    case 'map':
    case 'nodes':
    case 'configGet':
      return 'fromStoredMap';
    case 'configSet':
    case 'register':
    case 'heartbeat':
    case 'promote':
    case 'removeSecondary':
    case 'confirmEpoch':
    case 'leave':
    case 'drain':
    // Issue 15: events and the series live in the leader's memory only.
    case 'overview':
      return 'refuse';
    case 'leader':
      return 'leader';
    default:
      return assertNever(req);
  }
}

/** The answer to `map` or `nodes` from the stored map: a read-only host built for this request, its effects dropped. */
export function answerFromStoredMap(
  map: PersistedMap,
  req: NameserverRequest,
  opts: NameserverHostOptions,
  nowMs: number,
  address: string,
): NameserverReply {
  const view = new NameserverHost(map, false, opts, nowMs);
  view.address = address;
  return view.onRequest(req, nowMs).reply;
}

/** NOT_LEADER from candidate `selfId` (`why`), naming `leader` when that is another candidate. */
export function notLeaderError(
  selfId: string,
  why: string,
  leader: { readonly nodeId: string; readonly address: string } | undefined,
): NotLeaderError {
  const other = leader && leader.nodeId !== selfId ? leader : undefined;
  const who = other ? `; ${other.nodeId} at ${other.address} leads` : '';
  return new NotLeaderError(`nameserver ${selfId} does not lead (${why})${who}`, other?.address);
}
