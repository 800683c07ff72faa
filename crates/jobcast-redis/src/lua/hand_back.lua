-- hand_back: a stopping worker gives a running job back unfinished. It is queued again at
-- once with its old sequence number (so ahead of jobs queued after it), and the interrupted
-- attempt is not counted.
-- KEYS[1] job hash   KEYS[2] active   KEYS[3] ready of the job's method   KEYS[4] marker
-- ARGV: 1 token, 2 job id
-- Returns 1, or 0 when the lease is not held.
if redis.call('HGET', KEYS[1], 'tok') ~= ARGV[1] then return 0 end
local f = redis.call('HMGET', KEYS[1], 'pr', 'seq', 'a')
-- (w: the worker, kept by versions before it was read from the token.)
redis.call('HDEL', KEYS[1], 'tok', 'sa', 'w')
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'a', math.max(0, (tonumber(f[3]) or 1) - 1))
make_ready(KEYS[3], KEYS[4], KEYS[1], ARGV[2], f[1], f[2])
return 1
