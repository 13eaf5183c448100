-- hincrby_many.lua: several HINCRBYs on one hash in one command (a tick's counters).
--
-- KEYS[1]  the hash
-- ARGV     field, amount, field, amount, ...
--
-- Returns the number of fields changed.

for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
