-- purge: delete, in one batch, ended jobs in one state that ended before a time, from the
-- sorted set of earlier versions or from the ended log (prelude).
-- KEYS[1] ended (sorted set)   KEYS[2] end counts   KEYS[3] ended log
-- ARGV: 1 state, 2 before ms (exclusive), 3 job key prefix, 4 listeners key prefix,
--       5 batch size, 6 offset, 7 source ('z' the sorted set, 'l' the log)
-- Returns {deleted, next offset, done 0|1}; the caller repeats with the next offset until done.
-- In the sorted set the offset passes over jobs of other states (deleted ones leave it); in
-- the log it is a position (deleted jobs leave stale entries, dropped by `tick` at the head).
local state, before = ARGV[1], tonumber(ARGV[2])
local offset, batch = tonumber(ARGV[6]), tonumber(ARGV[5])
local deleted, next_offset, done = 0, offset, 0
if ARGV[7] == 'z' then
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2],
    'LIMIT', offset, batch)
  for _, id in ipairs(ids) do
    if redis.call('HGET', ARGV[3] .. id, 's') == state then
      redis.call('ZREM', KEYS[1], id)
      redis.call('DEL', ARGV[3] .. id, ARGV[4] .. id)
      deleted = deleted + 1
    else
      next_offset = next_offset + 1
    end
  end
  if #ids < batch then done = 1 end
else
  -- The log is in the order jobs ended, each stamped by the clock of the process that ended
  -- it: the scan goes a minute past `before`, so clocks that far apart still see every job.
  local entries = redis.call('LRANGE', KEYS[3], offset, offset + batch - 1)
  for _, entry in ipairs(entries) do
    local ms, id, s = logged_end(ARGV[3], entry)
    if ms >= before + 60000 then
      done = 1
      break
    end
    if s == state and ms < before then
      redis.call('DEL', ARGV[3] .. id, ARGV[4] .. id)
      deleted = deleted + 1
    end
    next_offset = next_offset + 1
  end
  if #entries < batch then done = 1 end
end
if deleted > 0 then redis.call('HINCRBY', KEYS[2], state, -deleted) end
return {deleted, next_offset, done}
