-- list_ended: ids of ended jobs in one state, oldest end first, skipping the first `offset`
-- of them: those in the sorted set of earlier versions, then those in the ended log (prelude).
-- Scans at most 100,000 ended jobs per call.
-- KEYS[1] ended (sorted set)   KEYS[2] ended log
-- ARGV: 1 state, 2 offset, 3 limit, 4 job key prefix
local out, skipped, scanned = {}, 0, 0
local skip, limit = tonumber(ARGV[2]), tonumber(ARGV[3])

local function take(id)
  if skipped < skip then
    skipped = skipped + 1
  elseif #out < limit then
    out[#out + 1] = id
  end
end

-- Reads `key` with `command` (ZRANGE or LRANGE) in windows of 500 while more are wanted;
-- `pick(item)` returns the item's job id when the job is in the state asked for.
local function scan(command, key, pick)
  local start = 0
  while #out < limit and scanned < 100000 do
    local items = redis.call(command, key, start, start + 499)
    if #items == 0 then return end
    for _, item in ipairs(items) do
      local id = pick(item)
      if id then take(id) end
    end
    start = start + 500
    scanned = scanned + #items
  end
end

scan('ZRANGE', KEYS[1], function(id)
  if redis.call('HGET', ARGV[4] .. id, 's') == ARGV[1] then return id end
end)
scan('LRANGE', KEYS[2], function(entry)
  local _, id, state = logged_end(ARGV[4], entry)
  if state == ARGV[1] then return id end
end)
return out
