-- add_attempt.lua: count one more failed tick of a run, only while its record exists. A tick
-- that lost its lease (a frozen worker) may come back after retention deleted its run: its
-- count must not bring a key of the deleted run back (it would count against a run started
-- again under that id within the key's TTL).
--
-- KEYS[1] {p}attempts:<id>   KEYS[2] {p}run:<id>
-- ARGV[1] "1": a fresh row (the count starts again at 1)   ARGV[2] TTL of the count (s)
--
-- Returns the count, or 0 when the run is gone (nothing written).

if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local n
if ARGV[1] == '1' then
  redis.call('SET', KEYS[1], 1)
  n = 1
else
  n = redis.call('INCR', KEYS[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return n
