-- purge: delete, in one batch, ended jobs in one state that ended before a time.
-- KEYS[1] ended log (prelude)   KEYS[2] end counts   KEYS[3] ended log's head position
-- ARGV: 1 state, 2 before ms (exclusive), 3 job key prefix, 4 listeners key prefix,
--       5 batch size, 6 where to go on: a position in the log ('' for its head)
-- Returns {deleted, next position, done 0|1}; the caller repeats from the next position until
-- done. Positions count from the log's first entry ever, not from its head: `tick` drops
-- entries from the head meanwhile (among them the stale ones this purge leaves) and moves
-- older ones in front of it, and an index into the list would skip or repeat that many.
-- The log is in the order jobs ended, each stamped by the clock of the process that ended it:
-- the scan goes a minute past `before`, so clocks that far apart still see every job.
local state, before = ARGV[1], tonumber(ARGV[2])
local batch = tonumber(ARGV[5])
local head = tonumber(redis.call('GET', KEYS[3]) or '0')
local at = 0
if ARGV[6] ~= '' then at = math.max(0, tonumber(ARGV[6]) - head) end
local deleted, done = 0, 0
local entries = redis.call('LRANGE', KEYS[1], at, at + batch - 1)
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
  at = at + 1
end
if deleted > 0 then redis.call('HINCRBY', KEYS[2], state, -deleted) end
return {deleted, head + at, done}
