-- Take a run's lease, or leave word that a tick was asked while it was held.
-- KEYS[1] lease key, KEYS[2] pending key, KEYS[3] next-tick note ({p}next:<id>)
-- ARGV[1] token, ARGV[2] ttl ms, ARGV[3] id of the message this tick runs for ("" none),
-- ARGV[4] how long the pending word lives (ms): as long as a tick may hold the lease
-- Returns 1 when taken (and clears the pending word: the new holder ticks anyway),
-- 0 when busy (the holder sees the pending word when it releases, and ticks again).
-- Either way, a message that was the run's pending tick of its own is consumed: its
-- note goes (when busy, the pending word carries its duty to the holder).
-- Idempotent: a retried call whose first try took the lease finds its own token (1).
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) == ARGV[3] then
  redis.call('DEL', KEYS[3])
end
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  return 1
end
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('DEL', KEYS[2])
  return 1
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
return 0
