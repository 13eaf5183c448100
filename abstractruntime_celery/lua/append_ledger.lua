-- append_ledger.lua: append one StepRecord and index its idempotency key, atomically.
--
-- KEYS[1]  ledger list      {p}ledger:<id>
-- KEYS[2]  completed index  {p}ledger-done:<id>  (idempotency key -> record JSON)
-- KEYS[3]  lease key (optional) fencing: append only if GET KEYS[3] == ARGV[4]
-- KEYS[4]  run hash  (optional) with KEYS[3]: append only if the run's stored status and
--          paused flag are ARGV[5], ARGV[6] (the tick's own writes go in one MULTI with its
--          save, so a record of a save a cancel or pause refuses is refused with it)
--
-- ARGV[1]  record JSON   ARGV[2]  idempotency key ("" = none)
-- ARGV[3]  step status   ARGV[4]  lease token   ARGV[5], ARGV[6]  expected status, paused
--
-- Returns the record's 1-based sequence number, -1 when the lease was lost, or
-- {-4, status, paused} when the run's control fields are not the expected ones.
-- The first COMPLETED record for a key wins (HSETNX), like SQLite's ORDER BY seq ASC.
-- Idempotent: a client retry of an append that already landed (same bytes at the
-- tail: a record carries its own step id and timestamps) appends nothing.

if #KEYS >= 3 and redis.call('GET', KEYS[3]) ~= ARGV[4] then
  return -1
end
if #KEYS >= 4 and ARGV[5] and ARGV[5] ~= '' then
  local ctl = redis.call('HMGET', KEYS[4], 'status', 'paused')
  if ctl[1] and (ctl[1] ~= ARGV[5] or (ctl[2] or '0') ~= ARGV[6]) then
    return {-4, ctl[1], ctl[2] or '0'}
  end
end
if redis.call('LINDEX', KEYS[1], -1) == ARGV[1] then
  return redis.call('LLEN', KEYS[1])
end
local seq = redis.call('RPUSH', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and ARGV[3] == 'completed' then
  redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[1])
end
return seq
