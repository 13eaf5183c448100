-- if_saved.lua: what a tick says about its commit (counters, the "resumed" notice) goes
-- out only if its last save landed: the run's stored `updated` is still the one it wrote.
-- Rides the lease-release pipeline, after the tick's queued saves.
-- KEYS[1] run hash  KEYS[2] stats hash
-- ARGV[1] updated score of the tick's last save  ARGV[2] notices channel  ARGV[3] notice JSON ("" none)
-- ARGV[4..] field, amount, field, amount ...
-- Returns 1 if the commit held (and all was sent), 0 if not.
if redis.call('HGET', KEYS[1], 'updated') ~= ARGV[1] then
  return 0
end
for i = 4, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
end
if ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 1
