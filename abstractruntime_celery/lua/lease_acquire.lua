-- Take a run's lease, or leave word that a tick was asked while it was held.
-- KEYS[1] lease key, KEYS[2] pending key; ARGV[1] token, ARGV[2] ttl ms.
-- Returns 1 when taken (and clears the pending word: the new holder ticks anyway),
-- 0 when busy (the holder sees the pending word when it releases, and ticks again).
-- Idempotent: a retried call whose first try took the lease finds its own token (1).
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  return 1
end
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('DEL', KEYS[2])
  return 1
end
redis.call('SET', KEYS[2], '1', 'PX', tonumber(ARGV[2]) * 2)
return 0
