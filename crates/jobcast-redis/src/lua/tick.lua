-- tick: move due delayed jobs to ready, requeue (or fail) jobs whose lease lapsed, and purge
-- ended jobs past retention. Run every few tens of ms by every worker; idempotent.
-- KEYS[1] delayed   KEYS[2] active   KEYS[3] ended   KEYS[4] seq   KEYS[5] open
-- KEYS[6] end counts
-- ARGV: 1 now ms, 2 job key prefix, 3 ready key prefix, 4 marker key prefix,
--       5 retention cutoff ms, 6 max stalls, 7 inbox channel prefix,
--       8 worker control channel prefix, 9 listeners key prefix, 10 batch limit
-- Returns the number of jobs moved or purged.
local now = ARGV[1]
local limit = tonumber(ARGV[10])
local moved = 0

local function make_ready(id, jk, method, priority)
  local seq = redis.call('INCR', KEYS[4])
  redis.call('HSET', jk, 's', 'queued', 'seq', seq)
  redis.call('ZADD', ARGV[3] .. method, string.format('%.0f', (1000 - tonumber(priority)) * 4398046511104 + seq), id)
  redis.call('LPUSH', ARGV[4] .. method, 1)
  redis.call('LTRIM', ARGV[4] .. method, 0, 0)
end

for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[1], id)
  local jk = ARGV[2] .. id
  local f = redis.call('HMGET', jk, 'm', 'pr')
  if f[1] then make_ready(id, jk, f[1], f[2]) end
  moved = moved + 1
end

for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[2], id)
  local jk = ARGV[2] .. id
  local f = redis.call('HMGET', jk, 'm', 'pr', 'w', 'a')
  if f[1] then
    redis.call('HDEL', jk, 'tok')
    if f[3] then redis.call('PUBLISH', ARGV[8] .. f[3], 'l:' .. id) end
    local stalls = redis.call('HINCRBY', jk, 'st', 1)
    if stalls > tonumber(ARGV[6]) then
      local err = cjson.encode({code = -32000,
        message = 'job failed: its worker stopped responding ' .. stalls .. ' times',
        data = {attempts = tonumber(f[4]) or 0, reason = 'lease lost'}})
      redis.call('HSET', jk, 's', 'failed', 'err', err, 'f', now)
      redis.call('ZADD', KEYS[3], now, id)
      redis.call('DECR', KEYS[5])
      redis.call('HINCRBY', KEYS[6], 'failed', 1)
      local msg = '{"t":"f","id":"' .. id .. '","err":' .. err .. '}'
      for _, gw in ipairs(redis.call('SMEMBERS', ARGV[9] .. id)) do
        redis.call('PUBLISH', ARGV[7] .. gw, msg)
      end
    else
      make_ready(id, jk, f[1], f[2])
    end
  end
  moved = moved + 1
end

for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[5], 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[3], id)
  local state = redis.call('HGET', ARGV[2] .. id, 's')
  if state then redis.call('HINCRBY', KEYS[6], state, -1) end
  redis.call('DEL', ARGV[2] .. id, ARGV[9] .. id)
  moved = moved + 1
end
return moved
