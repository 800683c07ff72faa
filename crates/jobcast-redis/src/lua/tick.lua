-- tick: move due delayed jobs to ready, requeue (or fail) jobs whose lease lapsed, and purge
-- ended jobs past retention. Run every few tens of ms by every worker; idempotent.
-- KEYS[1] delayed   KEYS[2] active   KEYS[3] ended (sorted set of earlier versions, moved)
-- KEYS[4] seq   KEYS[5] open   KEYS[6] end counts   KEYS[7] open jobs per owner
-- KEYS[8] ended log   KEYS[9] ended log's head position
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
  local f = redis.call('HMGET', jk, 'm', 'pr', 'tok', 'a', 'o', 'g', 'gx', 'oc')
  if f[1] then
    redis.call('HDEL', jk, 'tok')
    local worker = token_worker(f[3])
    if worker then redis.call('PUBLISH', ARGV[8] .. worker, 'l:' .. id) end
    local stalls = redis.call('HINCRBY', jk, 'st', 1)
    if stalls > tonumber(ARGV[6]) then
      local err = cjson.encode({code = -32000,
        message = 'job failed: its worker stopped responding ' .. stalls .. ' times',
        data = {attempts = tonumber(f[4]) or 0, reason = 'lease lost'}})
      redis.call('HSET', jk, 's', 'failed', 'err', err, 'f', now)
      redis.call('RPUSH', KEYS[8], log_entry(now, id))
      count_open(KEYS[5], KEYS[7], counted(f[5], f[8]), -1)
      redis.call('HINCRBY', KEYS[6], 'failed', 1)
      publish_final(f[6], f[7], ARGV[9] .. id, ARGV[7], id, 'err', err)
    else
      requeue(id, jk, f[1], f[2])
    end
  end
  moved = moved + 1
end

-- Jobs ended by earlier versions are in a sorted set: they move to the log's head, newest
-- first, so the log stays oldest first (they ended before any job in the log). The entry's
-- time is the job's `f`, which those versions wrote with the score.
local old = redis.call('ZREVRANGE', KEYS[3], 0, limit - 1, 'WITHSCORES')
if #old > 0 then
  local entries = {}
  for i = 1, #old, 2 do entries[#entries + 1] = log_entry(int(tonumber(old[i + 1])), old[i]) end
  call_in_slices('LPUSH', KEYS[8], entries)
  redis.call('DECRBY', KEYS[9], #entries)
  redis.call('ZREMRANGEBYRANK', KEYS[3], int(-#entries), -1)
end

-- Ended jobs past retention go, oldest first, and then the oldest of those over the cap (every
-- ended job kept is counted in the end counts). The log's head is read one entry at a time, so
-- a tick with nothing to purge reads one.
local kept = 0
for _, n in ipairs(redis.call('HVALS', KEYS[6])) do kept = kept + tonumber(n) end
local excess = kept - tonumber(ARGV[11])
local cutoff = tonumber(ARGV[5])
local taken = 0
while taken < limit do
  local entry = redis.call('LINDEX', KEYS[8], taken)
  if not entry then break end
  local ms, id, state = logged_end(ARGV[2], entry)
  if state then
    if ms > cutoff and excess <= 0 then break end
    redis.call('HINCRBY', KEYS[6], state, -1)
    redis.call('DEL', ARGV[2] .. id, ARGV[9] .. id)
    moved = moved + 1
    excess = excess - 1
  end
  taken = taken + 1
end
if taken > 0 then
  redis.call('LTRIM', KEYS[8], taken, -1)
  redis.call('INCRBY', KEYS[9], taken)
end
return moved
