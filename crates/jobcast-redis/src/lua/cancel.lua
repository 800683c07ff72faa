-- cancel: end a job that has not ended; tell its worker when it is running.
-- KEYS[1] job hash   KEYS[2] listeners   KEYS[3] active   KEYS[4] ended log   KEYS[5] open
-- KEYS[6] delayed    KEYS[7] end counts   KEYS[8] open jobs per owner
-- ARGV: 1 job id, 2 now ms, 3 inbox channel prefix, 4 ready key prefix {q}:ready:,
--       5 worker control channel prefix {q}:ctl:
-- Returns {1, 'cancelled'}, {0, state} when it had already ended, {-1, ''} when unknown.
local f = redis.call('HMGET', KEYS[1], 's', 'm', 'tok', 'a', 'o', 'g', 'gx', 'oc')
local state = f[1]
if not state then return {-1, ''} end
if has_ended(state) then return {0, state} end
if state == 'queued' then
  redis.call('ZREM', ARGV[4] .. f[2], ARGV[1])
elseif state == 'delayed' then
  redis.call('ZREM', KEYS[6], ARGV[1])
elseif state == 'active' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[1], 'tok')
  local worker = token_worker(f[3])
  if worker then redis.call('PUBLISH', ARGV[5] .. worker, 'c:' .. ARGV[1]) end
end
local err = cjson.encode({code = -32002, message = 'job cancelled', data = {attempts = tonumber(f[4]) or 0, reason = 'cancelled'}})
redis.call('HSET', KEYS[1], 's', 'cancelled', 'err', err, 'f', ARGV[2])
redis.call('RPUSH', KEYS[4], log_entry(ARGV[2], ARGV[1]))
count_open(KEYS[5], KEYS[8], counted(f[5], f[8]), -1)
redis.call('HINCRBY', KEYS[7], 'cancelled', 1)
publish_final(f[6], f[7], KEYS[2], ARGV[3], ARGV[1], 'err', err)
return {1, 'cancelled'}
