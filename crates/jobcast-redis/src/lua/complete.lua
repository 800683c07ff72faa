-- complete: end a running job with its result and publish the final response.
-- KEYS[1] job hash   KEYS[2] listeners   KEYS[3] active   KEYS[4] ended   KEYS[5] open
-- KEYS[6] end counts {q}:ends   KEYS[7] open jobs per owner {q}:owners
-- ARGV: 1 token, 2 result JSON, 3 now ms, 4 job id, 5 inbox channel prefix
-- Returns 1, or 0 when the lease is not held.
local f = redis.call('HMGET', KEYS[1], 'tok', 'o', 'g', 'gx')
if f[1] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 's', 'completed', 'res', ARGV[2], 'f', ARGV[3], 'tok', '')
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
count_open(KEYS[5], KEYS[7], f[2], -1)
redis.call('HINCRBY', KEYS[6], 'completed', 1)
publish_final(f[3], f[4], KEYS[2], ARGV[5], ARGV[4], 'ok', ARGV[2])
return 1
