-- list_ended: ids of ended jobs in one state, oldest end first, skipping the first `offset`
-- of them. Scans at most 100,000 entries of the ended log (prelude) per call.
-- KEYS[1] ended log
-- ARGV: 1 state, 2 offset, 3 limit, 4 job key prefix
local out, skipped, start = {}, 0, 0
local skip, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
while #out < limit and start < 100000 do
  local entries = redis.call('LRANGE', KEYS[1], start, start + 499)
  if #entries == 0 then break end
  for _, entry in ipairs(entries) do
    local _, id, state = logged_end(ARGV[4], entry)
    if state == ARGV[1] then
      if skipped < skip then
        skipped = skipped + 1
      elseif #out < limit then
        out[#out + 1] = id
      end
    end
  end
  start = start + 500
end
return out
