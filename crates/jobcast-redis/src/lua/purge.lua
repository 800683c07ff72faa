-- purge: delete, in one batch, ended jobs in one state that ended before a time.
-- KEYS[1] ended   KEYS[2] end counts
-- ARGV: 1 state, 2 before ms (exclusive), 3 job key prefix, 4 listeners key prefix,
--       5 batch size, 6 offset (ended jobs of other states already passed over)
-- Returns {deleted, passed over, scanned}; the caller repeats while scanned = batch size.
local deleted, kept = 0, 0
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2],
  'LIMIT', tonumber(ARGV[6]), tonumber(ARGV[5]))
for _, id in ipairs(ids) do
  if redis.call('HGET', ARGV[3] .. id, 's') == ARGV[1] then
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', ARGV[3] .. id, ARGV[4] .. id)
    deleted = deleted + 1
  else
    kept = kept + 1
  end
end
if deleted > 0 then redis.call('HINCRBY', KEYS[2], ARGV[1], -deleted) end
return {deleted, kept, #ids}
