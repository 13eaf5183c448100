-- inbox_done.lua: drop events from a run's inbox; forget the run when its inbox is empty.
-- (With the Redis run store, save_run.lua does this in the commit itself; this script is
-- for the other stores, after their commit, and for events of a run that has ended.)
-- KEYS[1] inbox  KEYS[2] inbox-body  KEYS[3] inbox-runs; ARGV[1] run id, ARGV[2..] event ids.
for i = 2, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[3], ARGV[1])
end
return #ARGV - 1
