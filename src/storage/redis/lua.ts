/** The Lua scripts of the redis backend (redis.ts describes the key layout they keep). */
import type { Redis } from 'ioredis';
import type { Arg } from './layout.js';

// ---------------------------------------------------------------------------------------
// Lua. Scripts read and write keys they build themselves (a standalone Redis, not a
// cluster). Numbers that become arguments are formatted with %d: Lua 5.1 would otherwise
// print large ones in exponent form.
// ---------------------------------------------------------------------------------------

/** Shared by the scripts that delete generations. */
export const LUA_RELEASE = `
local function release(p, g)
  local pg = p .. ':' .. g
  if redis.call('SCARD', 'ds:s:' .. pg) == 0 then
    redis.call('UNLINK', 'ds:d:' .. pg, 'ds:z:' .. pg, 'ds:u:' .. pg)
    redis.call('SREM', 'ds:orphans', pg)
  else
    redis.call('SADD', 'ds:orphans', pg)
  end
end
`;

/**
 * ARGV: owner, expected ds:bseq, next ds:bseq, next generation, then ops:
 *   L p n rec*n           append n log records
 *   F p keep              keep the first `keep` log records (truncateLogFrom)
 *   T p drop              drop the first `drop` log records (truncateLogTo)
 *   A p g n (kind key value client rec)*n   apply entries to generation g; kind p|d|e;
 *                         client '' for an untagged entry; a delete's rec gets 0|1 appended
 *   S p n (field value)*n set fields of the partition's state (and mark it existing)
 *   X p g                 drop the partition, whose data is generation g
 *   W p g old             switch to the staged generation g (installSnapshot), empty the log
 * Returns the `existed` flag (0|1) of every delete, in order.
 */
export const LUA_WRITE = `
if redis.call('GET', 'ds:owner') ~= ARGV[1] then
  return redis.error_reply('DSFENCED another dstore process opened this Redis database since this one did')
end
local bseq = redis.call('GET', 'ds:bseq') or '0'
if bseq ~= ARGV[2] then
  return redis.error_reply('DSFENCED the write counter is ' .. bseq .. ' where this process expected ' .. ARGV[2])
end
${LUA_RELEASE}
local function str(x) return string.format('%d', x) end
local function preimage(pins, dkey, k)
  local old = nil
  for _, sid in ipairs(pins) do
    local pv = 'ds:pv:' .. sid
    if redis.call('HEXISTS', pv, k) == 0 then
      if old == nil then old = redis.call('HGET', dkey, k) or '' end
      redis.call('HSET', pv, k, old)
      redis.call('ZADD', 'ds:pz:' .. sid, 0, k)
    end
  end
end
local n = #ARGV
local existed = {}
-- Pass 1 (run false) only walks the op stream, so a malformed one writes nothing.
local function walk(run)
  local i = 5
  while i <= n do
    local op, p = ARGV[i], ARGV[i + 1]
    if p == nil then return false end
    if op == 'L' then
      local last = i + 2 + tonumber(ARGV[i + 2])
      if run then
        local j = i + 3
        while j <= last do
          local hi = math.min(j + 999, last)
          redis.call('RPUSH', 'ds:l:' .. p, unpack(ARGV, j, hi))
          j = hi + 1
        end
      end
      i = last + 1
    elseif op == 'F' then
      if run then
        local keep = tonumber(ARGV[i + 2])
        if keep == 0 then redis.call('DEL', 'ds:l:' .. p) else redis.call('LTRIM', 'ds:l:' .. p, 0, str(keep - 1)) end
      end
      i = i + 3
    elseif op == 'T' then
      if run then redis.call('LTRIM', 'ds:l:' .. p, ARGV[i + 2], -1) end
      i = i + 3
    elseif op == 'A' then
      local c = tonumber(ARGV[i + 3])
      if run then
        local pg = p .. ':' .. ARGV[i + 2]
        local dkey, zkey, ukey = 'ds:d:' .. pg, 'ds:z:' .. pg, 'ds:u:' .. pg
        local pins = redis.call('SMEMBERS', 'ds:s:' .. pg)
        for e = 0, c - 1 do
          local at = i + 4 + 5 * e
          local kind, k, client, rec = ARGV[at], ARGV[at + 1], ARGV[at + 3], ARGV[at + 4]
          if kind ~= 'e' then
            if #pins > 0 then preimage(pins, dkey, k) end
            if kind == 'p' then
              if redis.call('HSET', dkey, k, ARGV[at + 2]) == 1 then redis.call('ZADD', zkey, 0, k) end
            else
              local had = redis.call('HDEL', dkey, k)
              if had == 1 then redis.call('ZREM', zkey, k) end
              existed[#existed + 1] = had
              rec = rec .. had
            end
          end
          if client ~= '' then redis.call('HSET', ukey, client, rec) end
        end
      end
      i = i + 4 + 5 * c
    elseif op == 'S' then
      local c = tonumber(ARGV[i + 2])
      if run then
        redis.call('HSET', 'ds:p:' .. p, unpack(ARGV, i + 3, i + 2 + 2 * c))
        redis.call('SADD', 'ds:parts', p)
      end
      i = i + 3 + 2 * c
    elseif op == 'X' then
      if run then
        redis.call('DEL', 'ds:p:' .. p, 'ds:l:' .. p)
        redis.call('SREM', 'ds:parts', p)
        release(p, ARGV[i + 2])
      end
      i = i + 3
    elseif op == 'W' then
      if run then
        redis.call('DEL', 'ds:l:' .. p)
        redis.call('SREM', 'ds:orphans', p .. ':' .. ARGV[i + 2])
        if ARGV[i + 3] ~= '' then release(p, ARGV[i + 3]) end
      end
      i = i + 4
    else
      return false
    end
  end
  return i == n + 1
end
if not walk(false) then return redis.error_reply('DSBADOPS a malformed op stream') end
redis.call('SET', 'ds:bseq', ARGV[3])
redis.call('SET', 'ds:nextgen', ARGV[4])
walk(true)
return existed
`;

/**
 * At open. ARGV: owner, format. Takes the database over, drops what dead processes left
 * (snapshot pins and pre-images, orphaned generations: S11), returns [bseq, nextgen, parts].
 */
export const LUA_INIT = `
local format = redis.call('GET', 'ds:format')
if format and format ~= ARGV[2] then
  return redis.error_reply('DSFORMAT this database holds dstore data of layout ' .. format .. ', not ' .. ARGV[2])
end
if not format then
  if redis.call('DBSIZE') ~= 0 then
    return redis.error_reply('DSFOREIGN this database holds keys that are not dstore data')
  end
  redis.call('SET', 'ds:format', ARGV[2])
end
redis.call('SET', 'ds:owner', ARGV[1])
local snaps = redis.call('HGETALL', 'ds:snaps')
for i = 1, #snaps, 2 do
  redis.call('UNLINK', 'ds:pv:' .. snaps[i], 'ds:pz:' .. snaps[i], 'ds:s:' .. snaps[i + 1])
end
redis.call('DEL', 'ds:snaps')
for _, pg in ipairs(redis.call('SMEMBERS', 'ds:orphans')) do
  local p, g = string.match(pg, '^(%d+):(%d+)$')
  if p and redis.call('HGET', 'ds:p:' .. p, 'g') ~= g then
    redis.call('UNLINK', 'ds:d:' .. pg, 'ds:z:' .. pg, 'ds:u:' .. pg)
  end
end
redis.call('DEL', 'ds:orphans')
return {
  redis.call('GET', 'ds:bseq') or '0',
  redis.call('GET', 'ds:nextgen') or '1',
  redis.call('SMEMBERS', 'ds:parts'),
}
`;

/** ARGV: owner, p, g, 'd'|'u', (field value)*: stages snapshot data or dedup records under g. */
export const LUA_STAGE = `
if redis.call('GET', 'ds:owner') ~= ARGV[1] then
  return redis.error_reply('DSFENCED another dstore process opened this Redis database since this one did')
end
local pg = ARGV[2] .. ':' .. ARGV[3]
redis.call('SADD', 'ds:orphans', pg)
if ARGV[4] == 'd' then
  for i = 5, #ARGV, 2 do
    redis.call('HSET', 'ds:d:' .. pg, ARGV[i], ARGV[i + 1])
    redis.call('ZADD', 'ds:z:' .. pg, 0, ARGV[i])
  end
else
  for i = 5, #ARGV, 2 do redis.call('HSET', 'ds:u:' .. pg, ARGV[i], ARGV[i + 1]) end
end
return 1
`;

/** ARGV: owner, p, g: deletes a staged generation that will not be installed. */
export const LUA_DISCARD = `
if redis.call('GET', 'ds:owner') ~= ARGV[1] then return 0 end
if redis.call('HGET', 'ds:p:' .. ARGV[2], 'g') == ARGV[3] then return 0 end
local pg = ARGV[2] .. ':' .. ARGV[3]
redis.call('UNLINK', 'ds:d:' .. pg, 'ds:z:' .. pg, 'ds:u:' .. pg)
redis.call('SREM', 'ds:orphans', pg)
return 1
`;

/** ARGV: owner, sid, p. Pins the partition's generation; returns [as, ae, g, dedup] or {}. */
export const LUA_SNAP_OPEN = `
if redis.call('GET', 'ds:owner') ~= ARGV[1] then
  return redis.error_reply('DSFENCED another dstore process opened this Redis database since this one did')
end
local st = redis.call('HMGET', 'ds:p:' .. ARGV[3], 'as', 'ae', 'g')
if not st[3] then return {} end
local pg = ARGV[3] .. ':' .. st[3]
redis.call('SADD', 'ds:s:' .. pg, ARGV[2])
redis.call('HSET', 'ds:snaps', ARGV[2], pg)
return { st[1], st[2], st[3], redis.call('HGETALL', 'ds:u:' .. pg) }
`;

/**
 * ARGV: sid, p, g, min ('-' or '(' .. key), keys, bytes. Returns, from the live keys and
 * from the pre-images, [exhausted 0|1, {key, value}*] each: one consistent view.
 */
export const LUA_SNAP_PAGE = `
local pg = ARGV[2] .. ':' .. ARGV[3]
local limit, maxBytes = tonumber(ARGV[5]), tonumber(ARGV[6])
local function page(zkey, hkey)
  local keys = redis.call('ZRANGEBYLEX', zkey, ARGV[4], '+', 'LIMIT', 0, limit)
  local out, bytes = {}, 0
  local exhausted = #keys < limit and 1 or 0
  for idx, k in ipairs(keys) do
    local v = redis.call('HGET', hkey, k)
    if not v then return redis.error_reply('DSCORRUPT key without a value in ' .. hkey) end
    out[#out + 1] = k
    out[#out + 1] = v
    bytes = bytes + #k + #v
    if bytes >= maxBytes and idx < #keys then
      exhausted = 0
      break
    end
  end
  return { exhausted, out }
end
local live = page('ds:z:' .. pg, 'ds:d:' .. pg)
if live.err then return live end
local pre = page('ds:pz:' .. ARGV[1], 'ds:pv:' .. ARGV[1])
if pre.err then return pre end
return { live[1], live[2], pre[1], pre[2] }
`;

/** ARGV: owner, sid: unpins; deletes the pre-images, and the generation if it is an orphan now. */
export const LUA_SNAP_CLOSE = `
if redis.call('GET', 'ds:owner') ~= ARGV[1] then return 0 end
local pg = redis.call('HGET', 'ds:snaps', ARGV[2])
redis.call('HDEL', 'ds:snaps', ARGV[2])
redis.call('UNLINK', 'ds:pv:' .. ARGV[2], 'ds:pz:' .. ARGV[2])
if pg then
  redis.call('SREM', 'ds:s:' .. pg, ARGV[2])
  if redis.call('SCARD', 'ds:s:' .. pg) == 0 and redis.call('SISMEMBER', 'ds:orphans', pg) == 1 then
    redis.call('UNLINK', 'ds:d:' .. pg, 'ds:z:' .. pg, 'ds:u:' .. pg)
    redis.call('SREM', 'ds:orphans', pg)
  end
end
return 1
`;

/** Reads resolve the generation inside Redis, so they never see half of a switch. */
export const LUA_GET = `
local g = redis.call('HGET', 'ds:p:' .. ARGV[1], 'g')
if not g then return false end
return redis.call('HGET', 'ds:d:' .. ARGV[1] .. ':' .. g, ARGV[2])
`;

/**
 * ARGV: p, min, limit, bytes, max. Returns [exhausted 0|1, {key, value|false}*]: the keys
 * from `min` up to `max` (ZRANGEBYLEX bounds; issue 14: a prefix scan ends where its prefix
 * does), each with its stored value (false when the index lists a key the hash lacks), until
 * `limit` keys or until the next value would take the reply past `bytes` (soft: the first
 * always fits). Issue 9: values are measured (HSTRLEN) before they are read, so one reply, and
 * the script's own memory, never holds more than `bytes` of values plus one.
 */
export const LUA_SCAN = `
local g = redis.call('HGET', 'ds:p:' .. ARGV[1], 'g')
if not g then return { 1, {} } end
local pg = ARGV[1] .. ':' .. g
local hkey = 'ds:d:' .. pg
local limit, maxBytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local keys = redis.call('ZRANGEBYLEX', 'ds:z:' .. pg, ARGV[2], ARGV[5] or '+', 'LIMIT', 0, limit)
local out, bytes = {}, 0
local exhausted = #keys < limit and 1 or 0
for idx, k in ipairs(keys) do
  local n = redis.call('HSTRLEN', hkey, k)
  if idx > 1 and bytes + n > maxBytes then
    exhausted = 0
    break
  end
  out[#out + 1] = k
  out[#out + 1] = redis.call('HGET', hkey, k)
  bytes = bytes + n
end
return { exhausted, out }
`;

export const LUA_COUNT = `
local g = redis.call('HGET', 'ds:p:' .. ARGV[1], 'g')
if not g then return 0 end
return redis.call('HLEN', 'ds:d:' .. ARGV[1] .. ':' .. g)
`;

export const LUA_DEDUP = `
local g = redis.call('HGET', 'ds:p:' .. ARGV[1], 'g')
if not g then return {} end
return redis.call('HGETALL', 'ds:u:' .. ARGV[1] .. ':' .. g)
`;

/** ARGV: p, fromSeq, toSeq, limit. Returns [first seq, records] (first seq '' when none). */
export const LUA_READ_LOG = `
local function str(x) return string.format('%d', x) end
local base = redis.call('HGET', 'ds:p:' .. ARGV[1], 'bs')
if not base then return { '', {} } end
base = tonumber(base)
local key = 'ds:l:' .. ARGV[1]
local len = redis.call('LLEN', key)
local from = math.max(tonumber(ARGV[2]), base + 1)
local to = math.min(tonumber(ARGV[3]), base + len, from + tonumber(ARGV[4]) - 1)
if from > to then return { '', {} } end
return { str(from), redis.call('LRANGE', key, str(from - base - 1), str(to - base - 1)) }
`;

export const SCRIPTS = {
  dsWrite: LUA_WRITE,
  dsInit: LUA_INIT,
  dsStage: LUA_STAGE,
  dsDiscard: LUA_DISCARD,
  dsSnapOpen: LUA_SNAP_OPEN,
  dsSnapPage: LUA_SNAP_PAGE,
  dsSnapClose: LUA_SNAP_CLOSE,
  dsGet: LUA_GET,
  dsScan: LUA_SCAN,
  dsCount: LUA_COUNT,
  dsDedup: LUA_DEDUP,
  dsReadLog: LUA_READ_LOG,
} as const;

/** The scripts as ioredis defines them: `<name>Buffer` answers with Buffers for bulk strings. */
export type ScriptCommands = { [K in keyof typeof SCRIPTS as `${K}Buffer`]: (...args: Arg[]) => Promise<unknown> };
export type Client = Redis & ScriptCommands;
