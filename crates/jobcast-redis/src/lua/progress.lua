-- progress: record a running job's progress and publish it to every listening gateway.
-- KEYS[1] job hash   KEYS[2] listeners
-- ARGV: 1 token, 2 progress JSON, 3 job id, 4 inbox channel prefix {q}:inbox:
-- Returns 1, or 0 when the lease is not held.
local f = redis.call('HMGET', KEYS[1], 'tok', 'g', 'gx')
if f[1] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'pg', ARGV[2])
publish_event(f[2], f[3], KEYS[2], ARGV[4], '{"t":"p","id":"' .. ARGV[3] .. '","p":' .. ARGV[2] .. '}')
return 1
