-- presence: who is in a topic, dropping the entries of gateways that stopped reporting.
-- KEYS[1] presence hash {q}:pr:<topic> (field "<gateway>|<connection>" = user)
-- KEYS[2] gateways {q}:gateways (gateway id -> report expiry ms)
-- ARGV: 1 now ms
-- Returns {connections, user...} with each user once, sorted.
local now = tonumber(ARGV[1])
local live = {}
local entries = redis.call('HGETALL', KEYS[1])
local users, seen, n = {}, {}, 0
for i = 1, #entries, 2 do
  local field, user = entries[i], entries[i + 1]
  local gw = string.match(field, '^(.*)|[^|]*$') or field
  local ok = live[gw]
  if ok == nil then
    local expiry = redis.call('ZSCORE', KEYS[2], gw)
    ok = expiry ~= false and tonumber(expiry) > now
    live[gw] = ok
  end
  if ok then
    n = n + 1
    if not seen[user] then
      seen[user] = true
      users[#users + 1] = user
    end
  else
    redis.call('HDEL', KEYS[1], field)
  end
end
table.sort(users)
local out = {n}
for _, u in ipairs(users) do out[#out + 1] = u end
return out
