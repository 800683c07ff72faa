-- complete: end a running job with its result and publish the final response.
-- KEYS[1] job hash   KEYS[2] listeners   KEYS[3] active   KEYS[4] ended   KEYS[5] open
-- KEYS[6] end counts {q}:ends
-- ARGV: 1 token, 2 result JSON, 3 now ms, 4 job id, 5 inbox channel prefix
-- Returns 1, or 0 when the lease is not held.
if redis.call('HGET', KEYS[1], 'tok') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 's', 'completed', 'res', ARGV[2], 'f', ARGV[3])
redis.call('HDEL', KEYS[1], 'tok')
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
redis.call('DECR', KEYS[5])
redis.call('HINCRBY', KEYS[6], 'completed', 1)
local msg = '{"t":"f","id":"' .. ARGV[4] .. '","ok":' .. ARGV[2] .. '}'
for _, gw in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('PUBLISH', ARGV[5] .. gw, msg)
end
return 1
