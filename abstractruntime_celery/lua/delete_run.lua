-- delete_run.lua: remove one run record and every index entry it owns, atomically.
--
-- KEYS[1]  run hash {p}run:<id>   KEYS[2..] the run's failure notes (attempts, unknown, backoff)
--          and its trace context: a run made again under this id starts with none
-- ARGV[1]  prefix   ARGV[2]  run id
--
-- Returns 1 when a record existed, 0 when it was absent.

local P, id, rk = ARGV[1], ARGV[2], KEYS[1]
local kind = redis.call('TYPE', rk)['ok']
if kind == 'none' then
  return 0
end
if kind == 'hash' then
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
redis.call('ZREM', P .. 'ix-all', id)
redis.call('ZREM', P .. 'due', id)
redis.call('ZREM', P .. 'ended', id)
redis.call('DEL', rk)
for i = 2, #KEYS do
  redis.call('DEL', KEYS[i])
end
return 1
