-- if_saved.lua: what a tick says about its commit (counters, the "resumed" notice, and the
-- events a run that ended never took) goes out only if its last save landed: the run's
-- stored `updated` is still the one it wrote. Rides the lease-release pipeline, after the
-- tick's queued saves.
-- KEYS[1] run hash  KEYS[2] stats hash  KEYS[3] inbox  KEYS[4] inbox-body  KEYS[5] inbox-runs
-- KEYS[6..] the run's failure notes (attempts, unknown workflow, backoff), deleted: it moved
-- ARGV[1] updated score of the tick's last save ("": that save is known to have landed, no
-- check: a pause or cancel that landed after it changed `updated`, not the commit)
-- ARGV[2] notices channel  ARGV[3] notice JSON ("" none)
-- ARGV[4] run id  ARGV[5] JSON list of event ids to drop from the inbox
-- ARGV[6..] field, amount, field, amount ...
-- Returns 1 if the commit held (and all was done), 0 if not.
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'updated') ~= ARGV[1] then
  return 0
end
for i = 6, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
end
local drop = cjson.decode(ARGV[5])
if #drop > 0 then
  for _, event_id in ipairs(drop) do
    redis.call('HDEL', KEYS[3], event_id)
    redis.call('HDEL', KEYS[4], event_id)
  end
  if redis.call('HLEN', KEYS[3]) == 0 then redis.call('ZREM', KEYS[5], ARGV[4]) end
end
for i = 6, #KEYS do
  redis.call('DEL', KEYS[i])
end
if ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 1
