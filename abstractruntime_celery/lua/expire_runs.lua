-- expire_runs.lua: retention. Delete the ended runs of a batch whose time is up, with every
-- key they own, in one atomic step per batch. Each run is checked again here, so nothing a
-- concurrent operation is bringing back is ever deleted:
--   * it must still be in {p}ended with an end time <= the cutoff (a save that moved it back,
--     a retry, took it out of the index; a save that ended it again moved its score on);
--   * its record must still say completed, failed or cancelled (else the entry is stale:
--     it leaves the index, the run stays);
--   * no lease may be held on it (a tick, a control action or a retry under the lease);
--   * no child of it may remain ({p}ix-parent:<id> empty): a parent goes after its children;
--   * its parent must be gone or ended itself: a live parent (waiting on it, paused, or
--     paused at the spawn node before its wait on the child was saved) may read the child's
--     record again, or spawn it again under the same id, and must find it.
--
-- The cutoff is Redis TIME minus retention_s: end times are Redis TIME too (save_run.lua),
-- so one clock counts both sides, whatever the clocks of the workers and the sweeper say.
--
-- ARGV[1] prefix   ARGV[2] retention_s: runs ended at or before TIME - retention_s expire
-- ARGV[3] the families of keys one run owns, comma-separated (keys.RUN_FAMILIES)
-- ARGV[4..] run ids
--
-- Returns {deleted ids..., '', kept ids...}: the runs deleted, then (after an empty string)
-- those kept for now (a lease, a child, a live parent, not due yet, or brought back).

local P = ARGV[1]
local now = redis.call('TIME')
local cutoff = tonumber(now[1]) + tonumber(now[2]) / 1000000 - tonumber(ARGV[2])
local families = {}
for name in string.gmatch(ARGV[3], '[^,]+') do families[#families + 1] = name end
local ended = {completed = true, failed = true, cancelled = true}
local deleted, kept = {}, {}

local function drop_indexes(id, rk)
  local old = redis.call('HMGET', rk, 'status', 'wf', 'reason', 'parent', 'wk', 'sid', 'mbox')
  if old[1] then redis.call('ZREM', P .. 'ix-status:' .. old[1], id) end
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
end

-- Is the parent of run `id` still live (in the store and not ended)? Then the child stays.
local function parent_live(parent)
  if not parent or parent == '' then return false end
  local pk = P .. 'run:' .. parent
  if redis.call('TYPE', pk)['ok'] ~= 'hash' then return false end
  local status = redis.call('HGET', pk, 'status')
  return not (status and ended[status])
end

for i = 4, #ARGV do
  local id = ARGV[i]
  local rk = P .. 'run:' .. id
  local score = tonumber(redis.call('ZSCORE', P .. 'ended', id))
  local kind = redis.call('TYPE', rk)['ok']
  local status, parent = nil, nil
  if kind == 'hash' then
    local f = redis.call('HMGET', rk, 'status', 'parent')
    status, parent = f[1], f[2]
  end
  if score == nil or score > cutoff then
    kept[#kept + 1] = id                      -- brought back, or ended again since: not due
  elseif kind ~= 'none' and not (status and ended[status]) then
    redis.call('ZREM', P .. 'ended', id)      -- a stale entry: the run is live, it stays
    kept[#kept + 1] = id
  elseif redis.call('EXISTS', P .. 'lease:' .. id) == 1
      or redis.call('ZCARD', P .. 'ix-parent:' .. id) > 0 or parent_live(parent) then
    kept[#kept + 1] = id                      -- someone holds it, a child remains, or its parent lives
  else
    if kind == 'hash' then drop_indexes(id, rk) end
    redis.call('ZREM', P .. 'ix-all', id)
    redis.call('ZREM', P .. 'due', id)
    redis.call('ZREM', P .. 'inbox-runs', id)
    redis.call('ZREM', P .. 'ended', id)
    for _, family in ipairs(families) do
      redis.call('DEL', P .. family .. ':' .. id)
    end
    deleted[#deleted + 1] = id
  end
end

local out = deleted
out[#out + 1] = ''
for _, id in ipairs(kept) do out[#out + 1] = id end
return out
