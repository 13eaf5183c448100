-- Remember that a broker timer is armed for (run, until); say whether it was already.
-- KEYS[1] timer key, KEYS[2] stats hash; ARGV[1] until iso, ARGV[2] ttl ms.
-- Returns 1 if newly armed (and counts timers_armed), 0 if it already was.
local old = redis.call('GET', KEYS[1])
if old == ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'timers_armed', 1)
return 1
