-- listen: add a gateway to a job's listeners, if the job exists.
-- KEYS[1] job hash   KEYS[2] listeners
-- ARGV: 1 gateway id
-- Returns 1, or 0 for an unknown job.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
add_listener(KEYS[1], KEYS[2], ARGV[1])
return 1
