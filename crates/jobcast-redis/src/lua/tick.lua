-- tick: move due delayed jobs to ready, requeue (or fail) jobs whose lease lapsed, and purge
-- ended jobs past retention. Run every few tens of ms by every worker; idempotent.
-- KEYS[1] delayed   KEYS[2] active   KEYS[3] ended   KEYS[4] seq   KEYS[5] open
-- KEYS[6] end counts   KEYS[7] open jobs per owner
-- ARGV: 1 now ms, 2 job key prefix, 3 ready key prefix, 4 marker key prefix,
--       5 retention cutoff ms, 6 max stalls, 7 inbox channel prefix,
--       8 worker control channel prefix, 9 listeners key prefix, 10 batch limit,
--       11 most ended jobs kept (past it the oldest are purged before their retention ends)
-- Returns the number of jobs moved or purged.
local now = ARGV[1]
local limit = tonumber(ARGV[10])
local moved = 0

local function requeue(id, jk, method, priority)
  make_ready(ARGV[3] .. method, ARGV[4] .. method, jk, id, priority, redis.call('INCR', KEYS[4]))
end

for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[1], id)
  local jk = ARGV[2] .. id
  local f = redis.call('HMGET', jk, 'm', 'pr')
  if f[1] then requeue(id, jk, f[1], f[2]) end
  moved = moved + 1
end

for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[2], id)
  local jk = ARGV[2] .. id
  local f = redis.call('HMGET', jk, 'm', 'pr', 'w', 'a', 'o', 'g', 'gx', 'oc')
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
      count_open(KEYS[5], KEYS[7], counted(f[5], f[8]), -1)
      redis.call('HINCRBY', KEYS[6], 'failed', 1)
      publish_final(f[6], f[7], ARGV[9] .. id, ARGV[7], id, 'err', err)
    else
      requeue(id, jk, f[1], f[2])
    end
  end
  moved = moved + 1
end

-- Deletes an ended job, already taken out of the ended set.
local function purge(id)
  local state = redis.call('HGET', ARGV[2] .. id, 's')
  if state then redis.call('HINCRBY', KEYS[6], state, '-1') end
  redis.call('DEL', ARGV[2] .. id, ARGV[9] .. id)
  moved = moved + 1
end

for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[5], 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[3], id)
  purge(id)
end

local excess = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[11])
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[3], int(math.min(excess, limit)))
  for i = 1, #popped, 2 do purge(popped[i]) end
end
return moved
