-- complete: end running jobs with their results, and publish each final response. One call
-- takes a worker's whole burst of completions, so the counters, the active and ended sets are
-- updated once per call, not once per job.
-- KEYS[1] active   KEYS[2] ended   KEYS[3] open   KEYS[4] end counts   KEYS[5] open per owner
-- ARGV: 1 now ms, 2 inbox channel prefix {q}:inbox:, 3 job key prefix {q}:j:,
--       4 listeners key prefix {q}:l:, then triples (job id, token, result JSON)
-- Returns one 1 or 0 per job, in order: 0 when its lease is not held.
local now = ARGV[1]
local out, done, ended = {}, {}, {}
for i = 5, #ARGV, 3 do
  local id, res = ARGV[i], ARGV[i + 2]
  local jk = ARGV[3] .. id
  local f = redis.call('HMGET', jk, 'tok', 'o', 'g', 'gx', 'oc')
  if f[1] == ARGV[i + 1] then
    redis.call('HSET', jk, 's', 'completed', 'res', res, 'f', now, 'tok', '')
    count_owner(KEYS[5], counted(f[2], f[5]), -1)
    publish_final(f[3], f[4], ARGV[4] .. id, ARGV[2], id, 'ok', res)
    done[#done + 1] = id
    ended[#ended + 1] = now
    ended[#ended + 1] = id
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #done > 0 then
  redis.call('ZREM', KEYS[1], unpack(done))
  redis.call('ZADD', KEYS[2], unpack(ended))
  redis.call('INCRBY', KEYS[3], int(-#done))
  redis.call('HINCRBY', KEYS[4], 'completed', int(#done))
end
return out
