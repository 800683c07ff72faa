-- prelude: helpers shared by the scripts that open, requeue, end and publish jobs. It is
-- prepended to each of them (scripts.rs), so every script sees the same definitions.

-- An integer as its decimal text. Redis 7.0 turns a Lua number given to redis.call into text
-- with printf's %.17g, and string.format's %.0f goes the same floating-point way: together
-- they were 8.5 % of Redis's CPU samples under load. %d prints the integer directly. Numbers given
-- to redis.call on the hot paths go through here (all are integers below 2^53).
local function int(n)
  return string.format('%d', n)
end

-- The worker holding a lease token, or nil when none is held: a claim makes tokens
-- '<worker id>-<call>-<n>' (lib.rs `claim`), so the job hash needs no field for the worker.
-- (Versions before kept it in field w as well; their tokens have the same form.)
local function token_worker(tok)
  if not tok or tok == '' then return nil end
  return string.match(tok, '^(.*)%-%d+%-%d+$')
end

-- Calls `command` on `key` with the items of `list` as its arguments, in slices small enough
-- for Lua's unpack (whose results must fit its stack: a claim may take as many jobs as a
-- worker's concurrency). The slices have an even length, so pairs stay whole.
local function call_in_slices(command, key, list)
  for i = 1, #list, 2000 do
    redis.call(command, key, unpack(list, i, math.min(i + 1999, #list)))
  end
end

-- Appends `value` to the list of `key` in `groups`, and `key` to `keys` the first time: values
-- grouped by key, the keys in the order first seen.
local function group_add(groups, keys, key, value)
  local list = groups[key]
  if not list then
    list = {}
    groups[key] = list
    keys[#keys + 1] = key
  end
  list[#list + 1] = value
end

-- A job's score in its method's ready set: by priority, then behind every job of its priority.
local function ready_score(priority, seq)
  return int((1000 - tonumber(priority)) * 4398046511104 + seq)
end

-- Wakes a worker blocked on a method's marker list. The marker holds at most one element: a
-- wake-up already pending is not repeated.
local function wake(marker_key)
  if redis.call('LLEN', marker_key) == 0 then
    redis.call('LPUSH', marker_key, '1')
  end
end

-- Puts job `id` in its method's ready set and wakes a worker for it.
local function push_ready(ready_key, marker_key, id, priority, seq)
  redis.call('ZADD', ready_key, ready_score(priority, seq), id)
  wake(marker_key)
end

-- Marks job `id` (hash `jk`) queued with sequence number `seq` and puts it in the ready set.
local function make_ready(ready_key, marker_key, jk, id, priority, seq)
  redis.call('HSET', jk, 's', 'queued', 'seq', int(seq))
  push_ready(ready_key, marker_key, id, priority, seq)
end

-- The owner a job is counted against, or nil, from its hash fields o and oc: a job counts
-- against its owner's cap of open jobs only when it was submitted under one. Counting costs two
-- commands per job, so jobs submitted without a cap skip it. A job stored now has its owner in
-- field o when it is counted and in field u when not (and no oc). Jobs stored by earlier
-- versions always have o, and said whether they count with oc = '1' or '0'; those without oc
-- were stored before it existed, when every job was counted.
local function counted(owner, oc)
  if oc == '0' then return nil end
  return owner
end

-- A job's owner from its hash fields o and u (see `counted`).
local function owner_of(o, u)
  return o or u
end

-- Counts a job of `owner` opening (+1) or ending (-1) in the open-jobs-per-owner hash (the
-- entry is removed at zero, so the hash holds only owners with open jobs).
local function count_owner(owners_key, owner, delta)
  if owner and owner ~= '' then
    if redis.call('HINCRBY', owners_key, owner, int(delta)) <= 0 then
      redis.call('HDEL', owners_key, owner)
    end
  end
end

-- Counts a job opening (+1) or ending (-1): the open-jobs counter and its owner's entry.
local function count_open(open_key, owners_key, owner, delta)
  redis.call('INCRBY', open_key, int(delta))
  count_owner(owners_key, owner, delta)
end

-- Listeners: the gateway that submitted a job is kept in the job hash (field g); any other
-- gateway that attaches goes in the job's listeners set, and field gx says the set has
-- members, so the usual job (one gateway) costs no set at all.

-- Adds gateway `gw` to the listeners of job hash `jk`.
local function add_listener(jk, listeners_key, gw)
  local f = redis.call('HMGET', jk, 'g', 'gx')
  if f[1] == gw then return end
  redis.call('SADD', listeners_key, gw)
  if not f[2] then redis.call('HSET', jk, 'gx', 1) end
end

-- Calls fn(gateway, msg) for every gateway listening to a job: `g` and `gx` are the job
-- hash's fields (a job without g, from before g existed, has every listener in the set).
local function each_listener(g, gx, listeners_key, fn, msg)
  if g then fn(g, msg) end
  if gx or not g then
    for _, other in ipairs(redis.call('SMEMBERS', listeners_key)) do
      if other ~= g then fn(other, msg) end
    end
  end
end

-- Publishes `msg` to the inbox of every gateway listening to a job.
local function publish_event(g, gx, listeners_key, inbox_prefix, msg)
  each_listener(g, gx, listeners_key, function(gw, m)
    redis.call('PUBLISH', inbox_prefix .. gw, m)
  end, msg)
end

-- A job's final event (`field` is ok or err, `json` its value) as published to gateways.
local function final_event(id, field, json)
  return '{"t":"f","id":"' .. id .. '","' .. field .. '":' .. json .. '}'
end

-- Publishes a job's final event to its listeners.
local function publish_final(g, gx, listeners_key, inbox_prefix, id, field, json)
  publish_event(g, gx, listeners_key, inbox_prefix, final_event(id, field, json))
end

-- The ended log, {q}:endlog: a list of '<end ms>:<job id>', appended as jobs end, so oldest
-- first (to within the clocks of the processes that ended them). Jobs ended by earlier versions
-- were in the sorted set {q}:ended, which `tick` moves to the log's head (keys.rs).
-- An entry stands for its job only while the job's end time is still the entry's: a job
-- retried, purged or deleted since leaves a stale entry, skipped by every reader and dropped
-- when it reaches the head.
local function log_entry(ms, id)
  return ms .. ':' .. id
end

-- Whether `state` is one a job ends in.
local function has_ended(state)
  return state == 'completed' or state == 'failed' or state == 'cancelled'
end

-- An entry's end time (a number) and job id, then the job's state when the entry still stands
-- for its end (nil when stale).
local function logged_end(job_prefix, entry)
  local at = string.find(entry, ':', 1, true)
  local ms, id = string.sub(entry, 1, at - 1), string.sub(entry, at + 1)
  local f = redis.call('HMGET', job_prefix .. id, 's', 'f')
  local state = nil
  if f[2] == ms and has_ended(f[1]) then
    state = f[1]
  end
  return tonumber(ms), id, state
end
