-- retry: run a failed or cancelled job again, from its first attempt, at the back of its
-- priority.
-- KEYS[1] job hash   KEYS[2] ended (sorted set of earlier versions)   KEYS[3] seq   KEYS[4] open   KEYS[5] end counts
-- KEYS[6] open jobs per owner
-- ARGV: 1 job id, 2 ready key prefix {q}:ready:, 3 marker key prefix {q}:mark:
-- Returns {1, 'queued'}, {0, state} when the job is in another state, {-1, ''} when unknown.
local f = redis.call('HMGET', KEYS[1], 's', 'm', 'pr', 'o', 'oc')
local state = f[1]
if not state then return {-1, ''} end
if state ~= 'failed' and state ~= 'cancelled' then return {0, state} end
-- A job ended by an earlier version leaves the sorted set; one in the ended log leaves a stale
-- entry there once its end time `f` is gone (prelude).
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[5], state, -1)
count_open(KEYS[4], KEYS[6], counted(f[4], f[5]), 1)
-- (w: the worker, kept by versions before it was read from the token.)
redis.call('HDEL', KEYS[1], 'err', 'res', 'pg', 'f', 'sa', 'w', 'tok')
redis.call('HSET', KEYS[1], 'a', 0, 'st', 0)
make_ready(ARGV[2] .. f[2], ARGV[3] .. f[2], KEYS[1], ARGV[1], f[3], redis.call('INCR', KEYS[3]))
return {1, 'queued'}
