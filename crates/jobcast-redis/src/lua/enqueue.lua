-- enqueue: create jobs, or report the existing one with the same id (idempotent submit). One
-- call takes a gateway's whole burst of submissions, so the sequence and the open-jobs counter
-- are read and written once per call, not once per job.
-- KEYS[1] delayed {q}:delayed   KEYS[2] seq {q}:seq   KEYS[3] open {q}:open
-- KEYS[4] open jobs per owner {q}:owners
-- ARGV: 1 now ms, 2 listener gateway id, 3 max open jobs, 4 job key prefix {q}:j:,
--       5 listeners key prefix {q}:l:, 6 ready key prefix {q}:ready:, 7 marker key prefix
--       {q}:mark:, then per job 9 values: id, method, params, owner, request id JSON ('' =
--       none), priority, delay ms, d (the job's fixed part as JSON, record.rs), max open jobs of
--       this owner (0 = no limit)
-- Returns per job, in order: {duplicate 0|1, state, owner}, or {-1, 'FULL', ''} (queue) or
-- {-1, 'OWNER_FULL', ''} (owner).
-- Job hash fields: s state, g submitting gateway, m method, p params, d fixed part (attempts,
-- timeout, backoff, created: record.rs), ra run at, pr priority, seq, o owner when counted
-- against its cap or u when not (see `counted`), r request id ('' when none), then as
-- the job runs: tok lease token ('' once released; it names the worker), a attempt, sa started, pg
-- progress, st stalls, f finished, res result, err error JSON, gx 1 when the listeners set
-- has other gateways. Jobs stored by earlier versions have no d: they have fields max, tmo,
-- bkt, bkd, bkj, c and oc instead, and o always, and every script still reads them.
local now = tonumber(ARGV[1])
local gw, max_open = ARGV[2], tonumber(ARGV[3])
local open = tonumber(redis.call('GET', KEYS[3]) or '0')
local opened = 0
local seq = nil
local out = {}
-- Ready jobs by method, {score, id, ...}: one ZADD and one wake-up check per method and call
-- (a call holds at most 256 jobs, lib.rs), not per job.
local ready, methods = {}, {}
for i = 8, #ARGV, 9 do
  local id, method, owner, priority = ARGV[i], ARGV[i + 1], ARGV[i + 3], ARGV[i + 5]
  local jk = ARGV[4] .. id
  local f = redis.call('HMGET', jk, 's', 'o', 'u')
  local state = f[1]
  if state then
    local o = owner_of(f[2], f[3])
    if o == owner then add_listener(jk, ARGV[5] .. id, gw) end
    out[#out + 1] = {1, state, o or ''}
  elseif open + opened >= max_open then
    out[#out + 1] = {-1, 'FULL', ''}
  else
    local owner_cap = tonumber(ARGV[i + 8])
    if owner_cap > 0 and tonumber(redis.call('HGET', KEYS[4], owner) or '0') >= owner_cap then
      out[#out + 1] = {-1, 'OWNER_FULL', ''}
    else
      -- Sequence numbers: one INCRBY for the rest of the batch, handed out in order.
      if not seq then
        local remaining = math.floor((#ARGV - i) / 9) + 1
        seq = redis.call('INCRBY', KEYS[2], remaining) - remaining
      end
      seq = seq + 1
      local delay = tonumber(ARGV[i + 6])
      state = 'queued'
      if delay > 0 then state = 'delayed' end
      local at = int(now + delay)
      -- The owner is field o when counted against its cap, u when not (see `counted`).
      local owner_field = 'u'
      if owner_cap > 0 then
        owner_field = 'o'
        count_owner(KEYS[4], owner, 1)
      end
      -- The fields a claim reads come first: a small hash is one list that Redis searches
      -- from the start for each field named.
      redis.call('HSET', jk, 's', state, 'g', gw, 'm', method, 'p', ARGV[i + 2],
        'd', ARGV[i + 7], 'ra', at, 'pr', priority, 'seq', int(seq), owner_field, owner,
        'r', ARGV[i + 4])
      if delay > 0 then
        redis.call('ZADD', KEYS[1], at, id)
      else
        group_add(ready, methods, method, ready_score(priority, seq))
        group_add(ready, methods, method, id)
      end
      opened = opened + 1
      out[#out + 1] = {0, state, owner}
    end
  end
end
for _, method in ipairs(methods) do
  call_in_slices('ZADD', ARGV[6] .. method, ready[method])
  wake(ARGV[7] .. method)
end
if opened > 0 then redis.call('INCRBY', KEYS[3], int(opened)) end
return out
