-- marks_clear.lua: delete a run's failure notes (attempts, unknown workflow, backoff) only while
-- the tick that moved the run still holds its lease: a tick that lost it (frozen past its TTL)
-- never erases the notes of the tick that took over. Queued before the lease release.
-- KEYS[1] lease key  KEYS[2..] the notes   ARGV[1] lease token
-- Returns the number of notes deleted, or -1 if the lease is not ours.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local n = 0
for i = 2, #KEYS do
  n = n + redis.call('DEL', KEYS[i])
end
return n
