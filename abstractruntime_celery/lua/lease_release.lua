-- Give a lease back if we still hold it, decide whether the run gets a tick of its own, and
-- add the tick's counters (one command for the whole end of a tick).
-- KEYS[1] lease key, KEYS[2] pending key, KEYS[3] next-tick note ({p}next:<id>),
-- KEYS[4 .. 3+ARGV[5]] notes of the run to delete with the release, only if the lease is
-- still ours (failure notes a tick that moved the run clears: a tick that lost its lease
-- never erases the notes of the tick that took over),
-- KEYS[4+ARGV[5] ..] hashes the tick counts in (stats, ...): counted whether or not the
-- lease was still ours (what the tick did happened either way).
-- ARGV[1] token, ARGV[2] "1" if the run needs another tick (RUNNING after max_steps),
-- ARGV[3] id for that tick's message, ARGV[4] the note's time to live (ms),
-- ARGV[5] how many notes follow KEYS[3], ARGV[6..] counter triples: hash index (1 = the
-- first hash after the notes), field, amount.
-- Returns {released, send}: released 1 (or -1: not ours any more); send 1 when the
-- caller must send a tick with id ARGV[3] (the run needs one, or one was asked while
-- we held the lease, and no tick of its own is pending already: the note is then set).
-- So a run has at most one pending tick of its own, however many messages come in.
local notes = tonumber(ARGV[5] or '0') or 0
for i = 6, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[3 + notes + tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
end
local released = -1
local asked = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  asked = redis.call('DEL', KEYS[2])
  released = 1
  for i = 4, 3 + notes do
    redis.call('DEL', KEYS[i])
  end
end
if released == 1 and (ARGV[2] == '1' or asked == 1) and redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[4]) then
  return {released, 1}
end
return {released, 0}
