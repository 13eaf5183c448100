-- inbox_read.lua: what a tick reads of a run's inbox with its lease: every event's small
-- header, and the payload of the one event the run can take now (never the others).
--
-- KEYS[1] inbox  KEYS[2] inbox-body  KEYS[3] run hash (optional: without it, no payload)
-- Returns {headers (flat list: event id, "<seq>|<header JSON>", ...), chosen event id or "",
-- its payload or ""}. The field names come too: an unreadable entry is still removable.
--
-- The choice is tick.py's `takes` rule: the run is WAITING and not paused; the oldest
-- event whose wait key is the run's, or (not strict) has none; a strict event only
-- answers an EVENT, USER or JOB wait.
local headers = redis.call('HGETALL', KEYS[1])
if #KEYS < 3 or #headers == 0 then
  return {headers, '', ''}
end
local run = redis.call('HMGET', KEYS[3], 'status', 'paused', 'reason', 'wkey')
if run[1] ~= 'waiting' or run[2] == '1' then
  return {headers, '', ''}
end
local answerable = {event = true, user = true, job = true}
local best_seq, best_id = nil, nil
for i = 2, #headers, 2 do
  local raw = headers[i]
  local seq, text = string.match(raw, '^(%d+)|(.*)$')
  local ok, h = pcall(cjson.decode, text or '')
  if seq and ok and type(h) == 'table' then
    local wk, strict = h.wait_key, h.strict == true
    local takes = false
    if wk == nil or wk == cjson.null then
      takes = not strict
    elseif wk == run[4] then
      takes = (not strict) or answerable[run[3]] == true
    end
    if takes and (best_seq == nil or tonumber(seq) < best_seq) then
      best_seq, best_id = tonumber(seq), h.event_id
    end
  end
end
if best_id == nil then
  return {headers, '', ''}
end
return {headers, best_id, redis.call('HGET', KEYS[2], best_id) or ''}
