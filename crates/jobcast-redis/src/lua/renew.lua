-- renew: extend the leases still held by their tokens.
-- KEYS[1] active {q}:active
-- ARGV: 1 new deadline ms, 2 job key prefix {q}:j:, then pairs of (job id, token)
-- Returns the ids whose lease is no longer held.
local lost = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HGET', ARGV[2] .. id, 'tok') == ARGV[i + 1] and redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], id)
  else
    lost[#lost + 1] = id
  end
end
return lost
