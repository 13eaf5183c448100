-- save_run.lua: write one run record and every index entry it owns, atomically; and, in
-- the same step, drop the inbox events this save commits.
--
-- KEYS[1]  run hash             {p}run:<id>
-- KEYS[2]  lease key (optional) fencing: nothing is written unless GET KEYS[2] == opts.token
--
-- ARGV[1]  prefix               ARGV[2]  run id
-- ARGV[3]  options JSON:
--            mode        "save" (upsert) | "create" (write only if absent)
--            expected    version for compare-and-set ("" none; a missing run has version 0)
--            token       lease token (with KEYS[2])
--            control     [status, paused] the tick last confirmed ("" none): if the stored
--                        ones differ, a cancel or pause landed mid-tick and must stand
--            drop_lease  "1": a create queued behind a reserved lease; if the run exists
--                        after all, drop KEYS[2] so every fenced write queued behind fails
--            done        event ids this save commits: dropped from the run's inbox here
--            hist        {field: amount} added to {p}hist with them (their resume latency)
--            started     "1": count a created run in {p}stats runs_started
--            clear       "1": a tick's save moves the run: its failure notes ({p}attempts,
--                        {p}unknown, {p}backoff) go in this step, only if it lands
--            counts      {field: amount} added to {p}stats if it lands (what the tick committed)
--            drop        event ids the run, now ended, never took: dropped if it lands
--            notice      [channel, message] published if it lands (the "resumed" notice)
--                        (the last three: ``if_saved.lua``'s work, riding the tick's last save)
--            layout      the key layout version: a save that writes a new record sets
--                        {p}layout if it is absent (the prefix's first run marks it), and
--                        is refused if it holds another version
-- ARGV[4]  doc: the RunState JSON
-- ARGV[5]  fields JSON: status, paused, wf, reason, until, due, parent, created, updated,
--          wk (event wait key, for the event index), wkey (any wait key), sid,
--          mbox (list of events_mailbox names), row (index row JSON),
--          ended ("1": the run is completed, failed or cancelled: {p}ended, scored with Redis
--          TIME when this save ends it; a save of a run already ended keeps its end time)
--
-- Returns {1, new_version} written | {0, version, doc} exists (create mode)
--         {-1} lease lost | {-2, version} version conflict
--         {-3} key holds a non-hash value (create mode refuses to overwrite it)
--         {-4, status, paused} the stored control fields are not the expected ones
--         {-5, mark} a new record under another key layout's mark (nothing written)

local P, id, rk = ARGV[1], ARGV[2], KEYS[1]
local o = cjson.decode(ARGV[3])
local doc = ARGV[4]
local f = cjson.decode(ARGV[5])
local leased = #KEYS >= 2

local function str(v)
  if v == nil or v == cjson.null then return '' end
  return tostring(v)
end

if leased and redis.call('GET', KEYS[2]) ~= o.token then
  return {-1}
end

local kind = redis.call('TYPE', rk)['ok']
local control = o.control
if kind == 'hash' and leased and type(control) == 'table' then
  local ctl = redis.call('HMGET', rk, 'status', 'paused')
  if ctl[1] and (ctl[1] ~= control[1] or (ctl[2] or '0') ~= control[2]) then
    return {-4, ctl[1], ctl[2] or '0'}
  end
end
local drop_lease = o.mode == 'create' and o.drop_lease == '1' and leased
local cur = 0
local ended_at = nil  -- the end time of a run already ended, kept by a save that leaves it ended
if kind == 'hash' then
  cur = tonumber(redis.call('HGET', rk, 'v') or '0') or 0
  if o.mode == 'create' then
    if drop_lease then redis.call('DEL', KEYS[2]) end
    return {0, cur, redis.call('HGET', rk, 'doc') or ''}
  end
elseif kind ~= 'none' and o.mode == 'create' then
  if drop_lease then redis.call('DEL', KEYS[2]) end
  return {-3}
end

if str(o.expected) ~= '' and tonumber(o.expected) ~= cur then
  return {-2, cur}
end

-- A new record claims the prefix for this key layout, or is refused (nothing written) under
-- another layout's mark, however recent: two versions never share a prefix.
if kind == 'none' and str(o.layout) ~= '' then
  local mark = redis.call('GET', P .. 'layout')
  if mark and mark ~= str(o.layout) then
    return {-5, mark}
  end
  if not mark then redis.call('SET', P .. 'layout', str(o.layout)) end
end

-- Drop the index entries of the previous version of this run.
if kind == 'hash' then
  local old = redis.call('HMGET', rk, 'status', 'wf', 'reason', 'parent', 'wk', 'sid', 'mbox')
  if old[1] then redis.call('ZREM', P .. 'ix-status:' .. old[1], id) end
  if old[1] == 'completed' or old[1] == 'failed' or old[1] == 'cancelled' then
    ended_at = redis.call('ZSCORE', P .. 'ended', id)
    redis.call('ZREM', P .. 'ended', id)  -- a run brought back (a retry) leaves retention's index
  end
  if old[2] then redis.call('ZREM', P .. 'ix-wf:' .. old[2], id) end
  if old[3] and old[3] ~= '' then redis.call('ZREM', P .. 'ix-reason:' .. old[3], id) end
  if old[4] and old[4] ~= '' then redis.call('ZREM', P .. 'ix-parent:' .. old[4], id) end
  if old[5] and old[5] ~= '' then
    redis.call('ZREM', P .. 'ix-evt:' .. old[5], id)
    redis.call('ZREM', P .. 'ix-evtkeys', old[5] .. '\0' .. id)
  end
  if old[6] and old[6] ~= '' then redis.call('ZREM', P .. 'ix-session:' .. old[6], id) end
  if old[7] and old[7] ~= '' then
    for name in string.gmatch(old[7], '[^\n]+') do
      redis.call('ZREM', P .. 'ix-mbox:' .. name, id)
    end
  end
elseif kind ~= 'none' then
  redis.call('DEL', rk)  -- garbage under the key: an explicit save replaces it
end
redis.call('ZREM', P .. 'due', id)

local status, wf, reason = str(f.status), str(f.wf), str(f.reason)
local parent, sid, wk, updated = str(f.parent), str(f.sid), str(f.wk), str(f.updated)
local mbox = ''
if type(f.mbox) == 'table' then mbox = table.concat(f.mbox, '\n') end
local version = cur + 1
redis.call('HSET', rk, 'doc', doc, 'v', version, 'status', status, 'paused', str(f.paused),
  'wf', wf, 'reason', reason, 'until', str(f['until']), 'parent', parent, 'wk', wk,
  'wkey', str(f.wkey), 'sid', sid, 'mbox', mbox, 'updated', updated, 'created', str(f.created),
  'row', str(f.row))

redis.call('ZADD', P .. 'ix-all', updated, id)
redis.call('ZADD', P .. 'ix-status:' .. status, updated, id)
redis.call('ZADD', P .. 'ix-wf:' .. wf, updated, id)
if reason ~= '' then redis.call('ZADD', P .. 'ix-reason:' .. reason, updated, id) end
if parent ~= '' then redis.call('ZADD', P .. 'ix-parent:' .. parent, str(f.created), id) end
if sid ~= '' then redis.call('ZADD', P .. 'ix-session:' .. sid, updated, id) end
if wk ~= '' then
  redis.call('ZADD', P .. 'ix-evt:' .. wk, updated, id)
  redis.call('ZADD', P .. 'ix-evtkeys', 0, wk .. '\0' .. id)
end
if type(f.mbox) == 'table' then
  for _, name in ipairs(f.mbox) do
    redis.call('ZADD', P .. 'ix-mbox:' .. name, updated, id)
  end
end
if str(f.due) ~= '' then redis.call('ZADD', P .. 'due', str(f.due), id) end
if str(f.ended) == '1' then
  -- retention counts from the end, on Redis's clock (one clock for every worker and sweeper,
  -- not updated_at, the ending worker's); a run brought back and ended again counts anew
  if not ended_at then
    local now = redis.call('TIME')
    ended_at = string.format('%d.%06d', tonumber(now[1]), tonumber(now[2]))
  end
  redis.call('ZADD', P .. 'ended', ended_at, id)
end

-- The inbox events this save commits leave the inbox in the same step (never before).
if type(o.done) == 'table' and #o.done > 0 then
  local inbox, body = P .. 'inbox:' .. id, P .. 'inbox-body:' .. id
  for _, event_id in ipairs(o.done) do
    redis.call('HDEL', inbox, event_id)
    redis.call('HDEL', body, event_id)
  end
  if redis.call('HLEN', inbox) == 0 then redis.call('ZREM', P .. 'inbox-runs', id) end
  redis.call('HINCRBY', P .. 'stats', 'events_applied', #o.done)
  if type(o.hist) == 'table' then
    for name, amount in pairs(o.hist) do
      redis.call('HINCRBY', P .. 'hist', name, amount)
    end
  end
end
if o.mode == 'create' and o.started == '1' then
  redis.call('HINCRBY', P .. 'stats', 'runs_started', 1)
end
if o.clear == '1' then
  redis.call('DEL', P .. 'attempts:' .. id, P .. 'unknown:' .. id, P .. 'backoff:' .. id)
end
if type(o.counts) == 'table' then
  for name, amount in pairs(o.counts) do
    redis.call('HINCRBY', P .. 'stats', name, amount)
  end
end
if type(o.drop) == 'table' and #o.drop > 0 then
  local inbox, body = P .. 'inbox:' .. id, P .. 'inbox-body:' .. id
  for _, event_id in ipairs(o.drop) do
    redis.call('HDEL', inbox, event_id)
    redis.call('HDEL', body, event_id)
  end
  if redis.call('HLEN', inbox) == 0 then redis.call('ZREM', P .. 'inbox-runs', id) end
end
if type(o.notice) == 'table' then
  redis.call('PUBLISH', o.notice[1], o.notice[2])
end

return {1, version}
