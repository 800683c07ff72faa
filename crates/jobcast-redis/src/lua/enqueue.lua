-- enqueue: create a job, or report the existing one with the same id (idempotent submit).
-- KEYS[1] job hash {q}:j:<id>     KEYS[2] listeners {q}:l:<id>   KEYS[3] ready {q}:ready:<method>
-- KEYS[4] delayed {q}:delayed     KEYS[5] seq {q}:seq            KEYS[6] open {q}:open
-- KEYS[7] marker {q}:mark:<method>   KEYS[8] open jobs per owner {q}:owners
-- ARGV: 1 id, 2 method, 3 params, 4 owner, 5 request id JSON ('' = none), 6 priority,
--       7 delay ms, 8 timeout ms ('' = none), 9 attempts, 10 backoff type, 11 backoff delay ms,
--       12 backoff jitter, 13 now ms, 14 listener gateway id, 15 max open jobs,
--       16 max open jobs of this owner (0 = no limit)
-- Returns {duplicate 0|1, state, owner}, or the error FULL (queue) or OWNER_FULL (owner).
-- Job hash fields: m method, p params, o owner, r request id, pr priority, tmo timeout, max
-- attempts, bkt/bkd/bkj backoff, s state, pg progress, a attempt, st stalls, c created,
-- sa started, f finished, ra run at, seq, res result, err error JSON, w worker, tok lease token
-- ('' once released), g submitting gateway, gx 1 when the listeners set has other gateways.
local state = redis.call('HGET', KEYS[1], 's')
if state then
  local owner = redis.call('HGET', KEYS[1], 'o')
  if owner == ARGV[4] then
    add_listener(KEYS[1], KEYS[2], ARGV[14])
  end
  return {1, state, owner}
end
if tonumber(redis.call('GET', KEYS[6]) or '0') >= tonumber(ARGV[15]) then
  return redis.error_reply('FULL')
end
local owner_cap = tonumber(ARGV[16])
if owner_cap > 0 and tonumber(redis.call('HGET', KEYS[8], ARGV[4]) or '0') >= owner_cap then
  return redis.error_reply('OWNER_FULL')
end
local seq = redis.call('INCR', KEYS[5])
local now = tonumber(ARGV[13])
local delay = tonumber(ARGV[7])
state = 'queued'
if delay > 0 then state = 'delayed' end
redis.call('HSET', KEYS[1], 'm', ARGV[2], 'p', ARGV[3], 'o', ARGV[4], 'r', ARGV[5], 'pr', ARGV[6],
  'tmo', ARGV[8], 'max', ARGV[9], 'bkt', ARGV[10], 'bkd', ARGV[11], 'bkj', ARGV[12], 's', state,
  'a', 0, 'st', 0, 'c', ARGV[13], 'ra', string.format('%.0f', now + delay), 'seq', seq,
  'g', ARGV[14])
if delay > 0 then
  redis.call('ZADD', KEYS[4], string.format('%.0f', now + delay), ARGV[1])
else
  push_ready(KEYS[3], KEYS[7], ARGV[1], ARGV[6], seq)
end
count_open(KEYS[6], KEYS[8], ARGV[4], 1)
return {0, state, ARGV[4]}
