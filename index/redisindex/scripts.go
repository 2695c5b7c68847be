package redisindex

import "github.com/redis/go-redis/v9"

// Every script touches the keys of one stream only (one hash tag), so it
// runs unchanged on Redis Cluster.

// addScript records a segment unless its start is taken.
//
// KEYS: open hash of the hour, hours zset, spans zset, meta hash.
// ARGV: start, segment JSON, hour, expected gen ("" when the caller has not
// read the hour's manifest), segment start, segment end, gap tolerance, the
// caller's clock (Unix ms).
//
// Returns {0, existing JSON} when the start is open already; {2, gen} when
// the hour may have a manifest that the caller must check first (then call
// again with that gen); {1, newHour} when added (newHour = 1 when the hour
// had no open entries, so the caller registers the stream for compaction).
//
// Spans are kept as members "start:end" scored by start, pairwise separated
// by more than the tolerance; the loop merges the new segment with its
// neighbours one at a time, so it touches O(merged spans) members.
//
// The meta hash keeps the stream's latest segment (index.Later order) for
// Latest: last (JSON), last_start, last_end and last_recv (ARGV[8]).
var addScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then return {0, cur} end
local gen = redis.call('HGET', KEYS[4], 'gen') or '0'
local wm = redis.call('HGET', KEYS[4], 'compacted')
if wm and tonumber(ARGV[3]) <= tonumber(wm) and gen ~= ARGV[4] then
  return {2, gen}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local newHour = redis.call('ZADD', KEYS[2], ARGV[3], ARGV[3])
local s = tonumber(ARGV[5])
local e = tonumber(ARGV[6])
local tol = tonumber(ARGV[7])
while true do
  local r = redis.call('ZREVRANGEBYSCORE', KEYS[3], string.format('%d', e + tol), '-inf', 'LIMIT', 0, 1)
  if #r == 0 then break end
  local sep = string.find(r[1], ':', 1, true)
  local xs = tonumber(string.sub(r[1], 1, sep - 1))
  local xe = tonumber(string.sub(r[1], sep + 1))
  if xe + tol < s then break end
  redis.call('ZREM', KEYS[3], r[1])
  if xs < s then s = xs end
  if xe > e then e = xe end
end
redis.call('ZADD', KEYS[3], string.format('%d', s), string.format('%d:%d', s, e))
local le = tonumber(redis.call('HGET', KEYS[4], 'last_end') or '-1')
local ls = tonumber(redis.call('HGET', KEYS[4], 'last_start') or '-1')
local ns = tonumber(ARGV[5])
local ne = tonumber(ARGV[6])
if ne > le or (ne == le and ns > ls) then
  redis.call('HSET', KEYS[4], 'last', ARGV[2], 'last_start', ARGV[5], 'last_end', ARGV[6], 'last_recv', ARGV[8])
end
return {1, newHour}
`)

// finishScript ends the compaction of one stream-hour after its manifest
// was written: it drops the open entries that went into the manifest (an
// entry changed or added meanwhile stays), forgets the hour when nothing is
// left open, sets gen to the (random) lease token so that concurrent Adds
// re-read the manifest and no gen value recurs after a DropStream, raises the
// compacted watermark and releases the lease. It does nothing when the
// lease was lost.
//
// It also sets the generation of the hour's day (mgen) to the token, so
// that no node uses a copy of the manifest read before.
//
// KEYS: open hash, hours zset, meta hash, lease, mgen hash. ARGV: lease
// token, hour, the hour's day, then field/value pairs.
var finishScript = redis.NewScript(`
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 0 end
for i = 4, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[2]) end
redis.call('HSET', KEYS[3], 'gen', ARGV[1])
redis.call('HSET', KEYS[5], ARGV[3], ARGV[1])
local wm = redis.call('HGET', KEYS[3], 'compacted')
if not wm or tonumber(wm) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[3], 'compacted', ARGV[2])
end
redis.call('DEL', KEYS[4])
return 1
`)

// releaseScript deletes a lease if it is still ours. KEYS: lease. ARGV: token.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// trimScript drops the spans that end by ARGV[1] and makes one that
// straddles it start there. KEYS: spans zset.
var trimScript = redis.NewScript(`
local r = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
for _, m in ipairs(r) do
  local sep = string.find(m, ':', 1, true)
  local e = string.sub(m, sep + 1)
  redis.call('ZREM', KEYS[1], m)
  if tonumber(e) > tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[1] .. ':' .. e)
  end
end
return #r
`)

// trimHourScript drops the open entries of one hour that start before
// ARGV[1] and forgets the hour when none is left, atomically so that a
// concurrent Add cannot leave an entry in an unlisted hour.
// KEYS: open hash, hours zset. ARGV: before, hour.
var trimHourScript = redis.NewScript(`
local b = tonumber(ARGV[1])
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if tonumber(f) < b then redis.call('HDEL', KEYS[1], f) end
end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[2]) end
return 1
`)

// trimGenScript retires the manifest generations of a trim: it drops those
// of the days before ARGV[1] (their manifests are gone; they fall back to
// the stream's gen), gives day ARGV[1] a new one (a manifest of it may have
// been rewritten or deleted) and renews the stream's gen. KEYS: mgen hash,
// meta hash. ARGV: day start, a fresh token.
var trimGenScript = redis.NewScript(`
local b = tonumber(ARGV[1])
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if tonumber(f) < b then redis.call('HDEL', KEYS[1], f) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], 'gen', ARGV[2])
return 1
`)
