-- Give a lease back if we still hold it, and say whether a tick was asked meanwhile.
-- KEYS[1] lease key, KEYS[2] pending key; ARGV[1] token.
-- Returns 1 (released, tick asked), 0 (released), -1 (not ours any more).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return redis.call('DEL', KEYS[2])
end
return -1
