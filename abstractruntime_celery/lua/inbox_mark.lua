-- inbox_mark.lua: write (or clear) an event's *applying* mark (stores without an atomic drop),
-- only while the caller holds the run's lease and the event is still in the inbox: a tick that
-- lost its lease never marks an event (a later save would make the mark read as committed),
-- and a dropped event is never written back.
-- KEYS[1] inbox hash  KEYS[2] lease key
-- ARGV[1] event id  ARGV[2] the entry ("seq|header")  ARGV[3] lease token
-- Returns 1 if written, 0 if the lease is not ours, -1 if the event is gone.
if redis.call('GET', KEYS[2]) ~= ARGV[3] then
  return 0
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
