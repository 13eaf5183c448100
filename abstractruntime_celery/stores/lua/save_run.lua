-- save_run.lua: write one run record and every index entry it owns, atomically.
--
-- KEYS[1]  run hash            {prefix}run:<run_id>
-- KEYS[2]  lease key (optional) fencing: the write happens only if GET KEYS[2] == ARGV[4]
--
-- ARGV[1]  prefix              ARGV[2]  run_id
-- ARGV[3]  expected version ("" = no compare-and-set; a missing run has version 0)
-- ARGV[4]  lease token (used only with KEYS[2])
-- ARGV[5]  mode: "save" (upsert) or "create" (write only if absent)
-- ARGV[6]  doc: the RunState JSON
-- ARGV[7..] status, paused(0|1), workflow_id, wait_reason, until_iso, due_score,
--           parent_run_id, created_score, updated_score, event_wait_key,
--           session_id, mailbox names ("\n"-joined), index row JSON
-- ARGV[20] expected status, ARGV[21] expected paused (0|1): with the lease only, and
--          "" for no check. The control fields the tick last confirmed; if the
--          stored ones differ, a cancel or pause landed mid-tick and must stand.
-- ARGV[22] "1": a create queued ahead of other writes (a run id made up by the caller);
--          if the run exists after all, drop the lease KEYS[2] so that every fenced
--          write queued behind this one is refused too.
--
-- Returns {1, new_version} written | {0, version, doc} exists (create mode)
--         {-1} lease lost | {-2, version} version conflict
--         {-3} key holds a non-hash value (create mode refuses to overwrite it)
--         {-4, status, paused} the stored control fields are not the expected ones

local P, id = ARGV[1], ARGV[2]
local expected, token, mode, doc = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local status, paused, wf, reason = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local until_iso, due, parent, created = ARGV[11], ARGV[12], ARGV[13], ARGV[14]
local updated, wk, sid, mbox, row = ARGV[15], ARGV[16], ARGV[17], ARGV[18], ARGV[19]
local rk = KEYS[1]

if #KEYS >= 2 and redis.call('GET', KEYS[2]) ~= token then
  return {-1}
end

local kind = redis.call('TYPE', rk)['ok']
local cur = 0
local want_status, want_paused = ARGV[20] or '', ARGV[21] or ''
if kind == 'hash' and #KEYS >= 2 and want_status ~= '' then
  local ctl = redis.call('HMGET', rk, 'status', 'paused')
  if ctl[1] and (ctl[1] ~= want_status or (ctl[2] or '0') ~= want_paused) then
    return {-4, ctl[1], ctl[2] or '0'}
  end
end
local drop_lease = mode == 'create' and ARGV[22] == '1' and #KEYS >= 2
if kind == 'hash' then
  cur = tonumber(redis.call('HGET', rk, 'v') or '0') or 0
  if mode == 'create' then
    if drop_lease then redis.call('DEL', KEYS[2]) end
    return {0, cur, redis.call('HGET', rk, 'doc') or ''}
  end
elseif kind ~= 'none' and mode == 'create' then
  if drop_lease then redis.call('DEL', KEYS[2]) end
  return {-3}
end

if expected ~= '' and tonumber(expected) ~= cur then
  return {-2, cur}
end

-- Drop the index entries of the previous version of this run.
if kind == 'hash' then
  local old = redis.call('HMGET', rk, 'status', 'wf', 'reason', 'parent', 'wk', 'sid', 'mbox')
  if old[1] then redis.call('ZREM', P .. 'ix:status:' .. old[1], id) end
  if old[2] then redis.call('ZREM', P .. 'ix:wf:' .. old[2], id) end
  if old[3] and old[3] ~= '' then redis.call('ZREM', P .. 'ix:reason:' .. old[3], id) end
  if old[4] and old[4] ~= '' then redis.call('ZREM', P .. 'ix:parent:' .. old[4], id) end
  if old[5] and old[5] ~= '' then
    redis.call('ZREM', P .. 'ix:evt:' .. old[5], id)
    redis.call('ZREM', P .. 'ix:evtkeys', old[5] .. '\0' .. id)
  end
  if old[6] and old[6] ~= '' then redis.call('ZREM', P .. 'ix:session:' .. old[6], id) end
  if old[7] then
    for name in string.gmatch(old[7], '[^\n]+') do
      redis.call('ZREM', P .. 'ix:mbox:' .. name, id)
    end
  end
elseif kind ~= 'none' then
  redis.call('DEL', rk)  -- garbage under the key: an explicit save replaces it
end
redis.call('ZREM', P .. 'due', id)

local version = cur + 1
redis.call('HSET', rk, 'doc', doc, 'v', version, 'status', status, 'paused', paused,
  'wf', wf, 'reason', reason, 'until', until_iso, 'parent', parent, 'wk', wk,
  'sid', sid, 'mbox', mbox, 'updated', updated, 'created', created, 'row', row)

redis.call('ZADD', P .. 'ix:all', updated, id)
redis.call('ZADD', P .. 'ix:status:' .. status, updated, id)
redis.call('ZADD', P .. 'ix:wf:' .. wf, updated, id)
if reason ~= '' then redis.call('ZADD', P .. 'ix:reason:' .. reason, updated, id) end
if parent ~= '' then redis.call('ZADD', P .. 'ix:parent:' .. parent, created, id) end
if sid ~= '' then redis.call('ZADD', P .. 'ix:session:' .. sid, updated, id) end
if wk ~= '' then
  redis.call('ZADD', P .. 'ix:evt:' .. wk, updated, id)
  redis.call('ZADD', P .. 'ix:evtkeys', 0, wk .. '\0' .. id)
end
for name in string.gmatch(mbox, '[^\n]+') do
  redis.call('ZADD', P .. 'ix:mbox:' .. name, updated, id)
end
if due ~= '' then redis.call('ZADD', P .. 'due', due, id) end

return {1, version}
