-- purge: delete, in one batch, ended jobs in one state that ended before a time.
-- KEYS[1] ended log (prelude)   KEYS[2] end counts
-- ARGV: 1 state, 2 before ms (exclusive), 3 job key prefix, 4 listeners key prefix,
--       5 batch size, 6 offset (a position in the log)
-- Returns {deleted, next offset, done 0|1}; the caller repeats with the next offset until done.
-- Deleted jobs leave stale entries, so positions do not move (`tick` drops them at the head).
-- The log is in the order jobs ended, each stamped by the clock of the process that ended it:
-- the scan goes a minute past `before`, so clocks that far apart still see every job.
local state, before = ARGV[1], tonumber(ARGV[2])
local offset, batch = tonumber(ARGV[6]), tonumber(ARGV[5])
local deleted, next_offset, done = 0, offset, 0
local entries = redis.call('LRANGE', KEYS[1], offset, offset + batch - 1)
if #entries < batch then done = 1 end
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
if deleted > 0 then redis.call('HINCRBY', KEYS[2], state, -deleted) end
return {deleted, next_offset, done}
