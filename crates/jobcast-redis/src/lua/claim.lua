-- claim: take up to N ready jobs of the given methods, best priority first across methods.
-- KEYS[1] active {q}:active   KEYS[2..n+1] ready {q}:ready:<method>, one per method
-- KEYS[n+2..2n+1] markers {q}:mark:<method>, same order
-- ARGV: 1 now ms, 2 lease ms, 3 max jobs, 4 token prefix '<worker id>-<call>-' (unique per
--       call; the worker holding a job is read from its token, `token_worker`),
--       5 job key prefix {q}:j:, 6 n (number of methods)
-- Work left behind gets its marker back, so other waiting workers wake for it.
-- Returns a list of {id, method, params, d, attempt, token, due ms}, where d is the job's
-- fixed part (record.rs).
local now = tonumber(ARGV[1])

-- For a job stored before field d existed: a d with what a worker reads (attempts, timeout),
-- from the old fields.
local function old_limits(jk)
  local f = redis.call('HMGET', jk, 'max', 'tmo')
  local tmo = 'null'
  if f[2] and f[2] ~= '' then tmo = f[2] end
  return '[' .. (f[1] or '1') .. ',' .. tmo .. ',0,0,0,0]'
end

local n_methods = tonumber(ARGV[6])
local out = {}
-- Pick the jobs. Only methods with ready jobs count (ZCARD is O(1)). With one, its best jobs
-- are read and removed by rank: ZPOPMIN would also return their scores, which Redis 7.0
-- formats with printf's %.17g (and Lua would parse back), for nothing. With several, read the
-- best `want` of each one's ready set with scores, merge them by score, and remove from each
-- set as many as were taken from it (they are its head, in the order ZRANGE gave): one read
-- and one removal per method and call, not one read of every method per job.
local want = tonumber(ARGV[3])
local last = int(want - 1)
local live = {}
for i = 2, n_methods + 1 do
  if n_methods == 1 or redis.call('ZCARD', KEYS[i]) > 0 then live[#live + 1] = i end
end
local ids = {}
if #live == 1 then
  ids = redis.call('ZRANGE', KEYS[live[1]], '0', last)
  if #ids > 0 then redis.call('ZREMRANGEBYRANK', KEYS[live[1]], '0', int(#ids - 1)) end
elseif #live > 1 then
  local heads, pos, score, taken = {}, {}, {}, {}
  for _, i in ipairs(live) do
    heads[i] = redis.call('ZRANGE', KEYS[i], '0', last, 'WITHSCORES')
    pos[i], taken[i] = 1, 0
    score[i] = tonumber(heads[i][2])
  end
  while #ids < want do
    local best = nil
    for _, i in ipairs(live) do
      if score[i] and (best == nil or score[i] < score[best]) then best = i end
    end
    if not best then break end
    local p = pos[best]
    ids[#ids + 1] = heads[best][p]
    taken[best] = taken[best] + 1
    pos[best] = p + 2
    score[best] = tonumber(heads[best][p + 3])
  end
  for _, i in ipairs(live) do
    if taken[i] > 0 then redis.call('ZREMRANGEBYRANK', KEYS[i], '0', int(taken[i] - 1)) end
  end
end
local deadline = int(now + tonumber(ARGV[2]))
-- Every job taken goes in the active set with the same deadline: one ZADD for all.
local leases = {}
for n, id in ipairs(ids) do
  local jk = ARGV[5] .. id
  local f = redis.call('HMGET', jk, 'm', 'p', 'd', 'ra', 'a')
  local d = f[3] or old_limits(jk)
  local attempt = (tonumber(f[5]) or 0) + 1
  local tok = ARGV[4] .. int(n)
  redis.call('HSET', jk, 's', 'active', 'tok', tok, 'a', int(attempt), 'sa', ARGV[1])
  leases[#leases + 1] = deadline
  leases[#leases + 1] = id
  out[#out + 1] = {id, f[1], f[2], d, attempt, tok, f[4] or '0'}
end
call_in_slices('ZADD', KEYS[1], leases)
for _, i in ipairs(live) do
  -- Jobs left: make sure a wake-up is pending for the other workers.
  if redis.call('ZCARD', KEYS[i]) > 0 then wake(KEYS[i + n_methods]) end
end
return out
