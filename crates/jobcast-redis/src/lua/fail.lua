-- fail: end the current attempt with a failure; retry after the job's backoff, or fail it.
-- KEYS[1] job hash   KEYS[2] listeners   KEYS[3] active   KEYS[4] ended log   KEYS[5] open
-- KEYS[6] delayed    KEYS[7] ready of the job's method     KEYS[8] seq     KEYS[9] marker
-- KEYS[10] end counts   KEYS[11] open jobs per owner
-- ARGV: 1 token, 2 kind (error|timeout), 3 message, 4 retryable (1|0), 5 now ms,
--       6 random unit [0,1), 7 job id, 8 inbox channel prefix
-- Returns {1, run at ms} when retrying, {0, 0} when the job failed, {-1, 0} when the lease
-- is not held.
if redis.call('HGET', KEYS[1], 'tok') ~= ARGV[1] then return {-1, 0} end
local f = redis.call('HMGET', KEYS[1], 'a', 'max', 'bkt', 'bkd', 'bkj', 'pr', 'o', 'g', 'gx', 'oc', 'd')
if f[11] then
  -- The limits are in the job's fixed part, [max, tmo, kind, delay, jitter, created]
  -- (record.rs); a job stored before d existed has fields.
  local d = cjson.decode(f[11])
  f[2], f[4], f[5] = d[1], d[4], d[5]
  f[3] = 'fixed'
  if d[3] == 1 then f[3] = 'exponential' end
end
local attempt, max = tonumber(f[1]), tonumber(f[2])
local now = tonumber(ARGV[5])
redis.call('HDEL', KEYS[1], 'tok')
redis.call('ZREM', KEYS[3], ARGV[7])
if ARGV[4] == '1' and attempt < max then
  local delay = tonumber(f[4]) or 0
  if f[3] == 'exponential' then delay = delay * 2 ^ math.min(attempt - 1, 40) end
  delay = math.min(delay, 86400000)
  delay = delay - math.floor(delay * (tonumber(f[5]) or 0) * tonumber(ARGV[6]))
  local at = int(now + delay)
  local seq = redis.call('INCR', KEYS[8])
  redis.call('HSET', KEYS[1], 'ra', at, 'seq', int(seq))
  if delay > 0 then
    redis.call('HSET', KEYS[1], 's', 'delayed')
    redis.call('ZADD', KEYS[6], at, ARGV[7])
  else
    make_ready(KEYS[7], KEYS[9], KEYS[1], ARGV[7], f[6], seq)
  end
  return {1, at}
end
local err
if ARGV[2] == 'timeout' then
  err = cjson.encode({code = -32001, message = 'job timed out', data = {attempts = attempt, reason = 'timeout'}})
else
  err = cjson.encode({code = -32000, message = 'job failed: ' .. ARGV[3], data = {attempts = attempt, reason = ARGV[3]}})
end
redis.call('HSET', KEYS[1], 's', 'failed', 'err', err, 'f', ARGV[5])
redis.call('RPUSH', KEYS[4], log_entry(ARGV[5], ARGV[7]))
count_open(KEYS[5], KEYS[11], counted(f[7], f[10]), -1)
redis.call('HINCRBY', KEYS[10], 'failed', 1)
publish_final(f[8], f[9], KEYS[2], ARGV[8], ARGV[7], 'err', err)
return {0, 0}
