-- prelude: helpers shared by the scripts that open, requeue and end jobs. It is prepended to
-- each of them (scripts.rs), so every script sees the same definitions.

-- Puts job `id` in its method's ready set behind every job of its priority, and wakes a worker
-- blocked on the method's marker list. The marker holds at most one element: a wake-up already
-- pending is not repeated.
local function push_ready(ready_key, marker_key, id, priority, seq)
  redis.call('ZADD', ready_key, string.format('%.0f', (1000 - tonumber(priority)) * 4398046511104 + seq), id)
  if redis.call('LLEN', marker_key) == 0 then
    redis.call('LPUSH', marker_key, 1)
  end
end

-- Marks job `id` (hash `jk`) queued with sequence number `seq` and puts it in the ready set.
local function make_ready(ready_key, marker_key, jk, id, priority, seq)
  redis.call('HSET', jk, 's', 'queued', 'seq', seq)
  push_ready(ready_key, marker_key, id, priority, seq)
end

-- Counts a job opening (+1) or ending (-1): the open-jobs counter, and the owner's entry in
-- the open-jobs-per-owner hash (removed at zero, so the hash holds only owners with open jobs).
local function count_open(open_key, owners_key, owner, delta)
  redis.call('INCRBY', open_key, delta)
  if owner and owner ~= '' then
    if redis.call('HINCRBY', owners_key, owner, delta) <= 0 then
      redis.call('HDEL', owners_key, owner)
    end
  end
end

-- Publishes a job's final event (`field` is ok or err, `json` its value) to the inbox of every
-- gateway listening to it.
local function publish_final(listeners_key, inbox_prefix, id, field, json)
  local msg = '{"t":"f","id":"' .. id .. '","' .. field .. '":' .. json .. '}'
  for _, gw in ipairs(redis.call('SMEMBERS', listeners_key)) do
    redis.call('PUBLISH', inbox_prefix .. gw, msg)
  end
end

