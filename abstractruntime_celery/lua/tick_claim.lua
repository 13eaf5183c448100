-- tick_claim.lua: the sweep is about to send a run a tick. Note it as the run's pending
-- tick (the same note a releasing tick sets for its own follow-up), unless a tick holds
-- the run now or one is queued for it already: then it sends nothing, and a backlog
-- never grows extra tick chains (the holder, or the queued tick, moves the run).
--
-- KEYS[1] lease key   KEYS[2] next-tick note ({p}next:<id>)
-- ARGV[1] id of the message to send   ARGV[2] the note's time to live (ms)
--
-- Returns 1: send the message with id ARGV[1] | 0: leave the run alone.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
