-- complete: end running jobs with their results, and publish their final responses. One call
-- takes a worker's whole burst of completions, so the counters, the active and ended sets are
-- updated once per call, not once per job, and each listening gateway gets one message: the
-- event alone when it is one, a JSON array of them when there are several (record.rs reads
-- both; a gateway older than the arrays cannot: README, upgrading).
-- KEYS[1] active   KEYS[2] ended log   KEYS[3] open   KEYS[4] end counts   KEYS[5] open per owner
-- ARGV: 1 now ms, 2 inbox channel prefix {q}:inbox:, 3 job key prefix {q}:j:,
--       4 listeners key prefix {q}:l:, then triples (job id, token, result JSON)
-- Returns one 1 or 0 per job, in order: 0 when its lease is not held.
local now = ARGV[1]
local out, done, ended = {}, {}, {}
-- Final events by listening gateway, and the gateways in the order first seen.
local events, gateways = {}, {}
local function queue_event(gw, msg) group_add(events, gateways, gw, msg) end
for i = 5, #ARGV, 3 do
  local id, res = ARGV[i], ARGV[i + 2]
  local jk = ARGV[3] .. id
  local f = redis.call('HMGET', jk, 'tok', 'o', 'g', 'gx', 'oc')
  if f[1] == ARGV[i + 1] then
    redis.call('HSET', jk, 's', 'completed', 'res', res, 'f', now, 'tok', '')
    count_owner(KEYS[5], counted(f[2], f[5]), -1)
    each_listener(f[3], f[4], ARGV[4] .. id, queue_event, final_event(id, 'ok', res))
    done[#done + 1] = id
    ended[#ended + 1] = log_entry(now, id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
for _, gw in ipairs(gateways) do
  local list = events[gw]
  if #list == 1 then
    redis.call('PUBLISH', ARGV[2] .. gw, list[1])
  else
    redis.call('PUBLISH', ARGV[2] .. gw, '[' .. table.concat(list, ',') .. ']')
  end
end
if #done > 0 then
  redis.call('ZREM', KEYS[1], unpack(done))
  call_in_slices('RPUSH', KEYS[2], ended)
  redis.call('INCRBY', KEYS[3], int(-#done))
  redis.call('HINCRBY', KEYS[4], 'completed', int(#done))
end
return out
