-- enqueue: create jobs, or report the existing one with the same id (idempotent submit). One
-- call takes a gateway's whole burst of submissions, so the sequence and the open-jobs counter
-- are read and written once per call, not once per job.
-- KEYS[1] delayed {q}:delayed   KEYS[2] seq {q}:seq   KEYS[3] open {q}:open
-- KEYS[4] open jobs per owner {q}:owners
-- ARGV: 1 now ms, 2 listener gateway id, 3 max open jobs, 4 job key prefix {q}:j:,
--       5 listeners key prefix {q}:l:, 6 ready key prefix {q}:ready:, 7 marker key prefix
--       {q}:mark:, then per job 13 values: id, method, params, owner, request id JSON
--       ('' = none), priority, delay ms, timeout ms ('' = none), attempts, backoff type,
--       backoff delay ms, backoff jitter, max open jobs of this owner (0 = no limit)
-- Returns per job, in order: {duplicate 0|1, state, owner}, or {-1, 'FULL', ''} (queue) or
-- {-1, 'OWNER_FULL', ''} (owner).
-- Job hash fields: m method, p params, o owner, r request id, pr priority, tmo timeout, max
-- attempts, bkt/bkd/bkj backoff, s state, pg progress, a attempt, st stalls, c created,
-- sa started, f finished, ra run at, seq, res result, err error JSON, w worker, tok lease token
-- ('' once released), g submitting gateway, gx 1 when the listeners set has other gateways.
local now = tonumber(ARGV[1])
local gw, max_open = ARGV[2], tonumber(ARGV[3])
local open = tonumber(redis.call('GET', KEYS[3]) or '0')
local opened = 0
local seq = nil
local out = {}
-- Ready jobs by method, {score, id, ...}: one ZADD and one wake-up check per method and call
-- (a call holds at most 64 jobs, lib.rs), not per job.
local ready, methods = {}, {}
for i = 8, #ARGV, 13 do
  local id, method, owner, priority = ARGV[i], ARGV[i + 1], ARGV[i + 3], ARGV[i + 5]
  local jk = ARGV[4] .. id
  local state = redis.call('HGET', jk, 's')
  if state then
    local o = redis.call('HGET', jk, 'o')
    if o == owner then add_listener(jk, ARGV[5] .. id, gw) end
    out[#out + 1] = {1, state, o or ''}
  elseif open + opened >= max_open then
    out[#out + 1] = {-1, 'FULL', ''}
  else
    local owner_cap = tonumber(ARGV[i + 12])
    if owner_cap > 0 and tonumber(redis.call('HGET', KEYS[4], owner) or '0') >= owner_cap then
      out[#out + 1] = {-1, 'OWNER_FULL', ''}
    else
      -- Sequence numbers: one INCRBY for the rest of the batch, handed out in order.
      if not seq then
        local remaining = math.floor((#ARGV - i) / 13) + 1
        seq = redis.call('INCRBY', KEYS[2], remaining) - remaining
      end
      seq = seq + 1
      local delay = tonumber(ARGV[i + 6])
      state = 'queued'
      if delay > 0 then state = 'delayed' end
      local at = int(now + delay)
      -- The fields every job's claim and end read and write come first: a small hash is one
      -- list that Redis searches from the start for each field named. `tok` is '' until a
      -- worker holds the job, as after it is released.
      -- oc: counted against its owner's cap (see `counted`).
      local oc = '0'
      if owner_cap > 0 then oc = '1' end
      redis.call('HSET', jk, 's', state, 'tok', '', 'a', '0', 'g', gw, 'o', owner, 'm', method,
        'p', ARGV[i + 2], 'max', ARGV[i + 8], 'tmo', ARGV[i + 7], 'ra', at, 'seq', int(seq),
        'pr', priority, 'r', ARGV[i + 4], 'bkt', ARGV[i + 9], 'bkd', ARGV[i + 10],
        'bkj', ARGV[i + 11], 'st', '0', 'c', ARGV[1], 'oc', oc)
      if delay > 0 then
        redis.call('ZADD', KEYS[1], at, id)
      else
        local list = ready[method]
        if not list then
          list = {}
          ready[method] = list
          methods[#methods + 1] = method
        end
        list[#list + 1] = ready_score(priority, seq)
        list[#list + 1] = id
      end
      if oc == '1' then count_owner(KEYS[4], owner, 1) end
      opened = opened + 1
      out[#out + 1] = {0, state, owner}
    end
  end
end
for _, method in ipairs(methods) do
  zadd_all(ARGV[6] .. method, ready[method])
  wake(ARGV[7] .. method)
end
if opened > 0 then redis.call('INCRBY', KEYS[3], int(opened)) end
return out
