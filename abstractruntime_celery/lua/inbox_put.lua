-- inbox_put.lua: store an accepted event durably, numbered in arrival order, within the
-- run's inbox limits, and note the run for the sweep. One atomic step.
--
-- KEYS[1] inbox (event id -> "<seq>|<header JSON>")   KEYS[2] inbox-body (event id -> payload)
-- KEYS[3] inbox-runs zset                             KEYS[4] event-seq counter
-- KEYS[5] stats hash
-- ARGV[1] event id  ARGV[2] header JSON  ARGV[3] payload JSON  ARGV[4] run id
-- ARGV[5] accepted_at (epoch s)  ARGV[6] max events  ARGV[7] max payload bytes in the inbox
-- ARGV[8] "1": one event per wait (the seed's rule): refuse if an unapplied event under the
--          key ARGV[9] (the run's current wait key), or under no key, is already queued
-- KEYS[6] (optional, with ARGV[8]) the run hash: refuse unless its version 'v' is ARGV[10]
--          (the run the caller checked has not moved on since); or, with ARGV[11], the run's
--          lease key: refuse unless it holds ARGV[11] (the caller checked under that lease)
-- ARGV[12] (optional, not empty) a delivery record: the event is a delivery that must be
--          stored once (a webhook). KEYS[#KEYS] is its mark (``{p}hook-seen:...``): if it
--          exists, nothing is stored and its record is returned; else the mark is written
--          with the event, kept ARGV[13] ms. The mark and the event go together or not at all.
--
-- Returns {1, seq} stored | {-1, events} too many events | {-2, bytes} too many bytes |
-- {-3, event id} the wait already has its event | {-5, version} the run moved on |
-- {2, record} the delivery was stored before | {-6, key} a key to write holds another type
-- (nothing written). A retried call (same event id) stores nothing twice.
local delivery = ARGV[12] and ARGV[12] ~= ''
local mark = delivery and KEYS[#KEYS] or nil
if delivery then
  local seen = redis.call('GET', mark)
  if seen then
    return {2, seen}
  end
end
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then
  return {1, tonumber(string.match(existing, '^(%d+)|'))}
end
if ARGV[8] == '1' and #KEYS >= 6 and ARGV[11] and ARGV[11] ~= '' then
  if redis.call('GET', KEYS[6]) ~= ARGV[11] then
    return {-5, '0'}
  end
elseif ARGV[8] == '1' and #KEYS >= 6 and ARGV[10] ~= '' then
  local v = redis.call('HGET', KEYS[6], 'v')
  if tostring(v or '0') ~= ARGV[10] then
    return {-5, tostring(v or '0')}
  end
end
if ARGV[8] == '1' then
  for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
    local ok, h = pcall(cjson.decode, string.match(raw, '^%d+|(.*)$') or '')
    if ok and type(h) == 'table' and (h.wait_key == nil or h.wait_key == cjson.null or h.wait_key == ARGV[9]) then
      return {-3, tostring(h.event_id)}
    end
  end
end
local n = redis.call('HLEN', KEYS[1])
if n >= tonumber(ARGV[6]) then
  return {-1, n}
end
local bytes = #ARGV[3]
for _, event_id in ipairs(redis.call('HKEYS', KEYS[2])) do
  bytes = bytes + redis.call('HSTRLEN', KEYS[2], event_id)
end
if bytes > tonumber(ARGV[7]) then
  return {-2, bytes}
end
-- Every write below must succeed once the first does (a script is not rolled back): a
-- key of another type would fail its write half-way, so it is found before any write
-- (KEYS[1] and KEYS[2] were read above as hashes). Redis refuses a script for memory
-- (maxmemory) only at its first write, the INCR; the mark goes last, so no failure can
-- leave a mark without its event.
local wants = {[3] = 'zset', [4] = 'string', [5] = 'hash'}
for i, kind in pairs(wants) do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= kind then
    return {-6, KEYS[i]}
  end
end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], ARGV[1], seq .. '|' .. ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], 'NX', ARGV[5], ARGV[4])
redis.call('HINCRBY', KEYS[5], 'events_accepted', 1)
if delivery then
  redis.call('SET', mark, ARGV[12], 'PX', ARGV[13])
end
return {1, seq}
