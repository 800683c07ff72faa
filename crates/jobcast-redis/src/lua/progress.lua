-- progress: record a running job's progress and publish it to every listening gateway.
-- KEYS[1] job hash   KEYS[2] listeners
-- ARGV: 1 token, 2 progress JSON, 3 job id, 4 inbox channel prefix {q}:inbox:
-- Returns 1, or 0 when the lease is not held.
if redis.call('HGET', KEYS[1], 'tok') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'pg', ARGV[2])
local msg = '{"t":"p","id":"' .. ARGV[3] .. '","p":' .. ARGV[2] .. '}'
for _, gw in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('PUBLISH', ARGV[4] .. gw, msg)
end
return 1
