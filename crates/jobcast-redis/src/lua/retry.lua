-- retry: run a failed or cancelled job again, from its first attempt, at the back of its
-- priority.
-- KEYS[1] job hash   KEYS[2] seq   KEYS[3] open   KEYS[4] end counts   KEYS[5] open jobs per owner
-- ARGV: 1 job id, 2 ready key prefix {q}:ready:, 3 marker key prefix {q}:mark:
-- Returns {1, 'queued'}, {0, state} when the job is in another state, {-1, ''} when unknown.
local f = redis.call('HMGET', KEYS[1], 's', 'm', 'pr', 'o', 'oc')
local state = f[1]
if not state then return {-1, ''} end
if state ~= 'failed' and state ~= 'cancelled' then return {0, state} end
-- Its entry in the ended log is stale once its end time `f` is gone (prelude).
redis.call('HINCRBY', KEYS[4], state, -1)
count_open(KEYS[3], KEYS[5], counted(f[4], f[5]), 1)
-- (w: the worker, kept by versions before it was read from the token.)
redis.call('HDEL', KEYS[1], 'err', 'res', 'pg', 'f', 'sa', 'w', 'tok')
redis.call('HSET', KEYS[1], 'a', 0, 'st', 0)
make_ready(ARGV[2] .. f[2], ARGV[3] .. f[2], KEYS[1], ARGV[1], f[3], redis.call('INCR', KEYS[2]))
return {1, 'queued'}
