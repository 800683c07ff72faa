-- retry: run a failed or cancelled job again, from its first attempt, at the back of its
-- priority.
-- KEYS[1] job hash   KEYS[2] ended   KEYS[3] seq   KEYS[4] open   KEYS[5] end counts
-- ARGV: 1 job id, 2 ready key prefix {q}:ready:, 3 marker key prefix {q}:mark:
-- Returns {1, 'queued'}, {0, state} when the job is in another state, {-1, ''} when unknown.
local f = redis.call('HMGET', KEYS[1], 's', 'm', 'pr')
local state = f[1]
if not state then return {-1, ''} end
if state ~= 'failed' and state ~= 'cancelled' then return {0, state} end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[5], state, -1)
redis.call('INCR', KEYS[4])
local seq = redis.call('INCR', KEYS[3])
redis.call('HDEL', KEYS[1], 'err', 'res', 'pg', 'f', 'sa', 'w', 'tok')
redis.call('HSET', KEYS[1], 's', 'queued', 'a', 0, 'st', 0, 'seq', seq)
redis.call('ZADD', ARGV[2] .. f[2],
  string.format('%.0f', (1000 - tonumber(f[3])) * 4398046511104 + seq), ARGV[1])
redis.call('LPUSH', ARGV[3] .. f[2], 1)
redis.call('LTRIM', ARGV[3] .. f[2], 0, 0)
return {1, 'queued'}
