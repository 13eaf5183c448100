-- Drop an applied event from a run's inbox; forget the run when its inbox is empty.
-- KEYS[1] inbox hash, KEYS[2] inbox-runs zset; ARGV[1] event id, ARGV[2] run id.
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return removed
