-- zwalk.lua: the next members of a sorted set after a cursor, for a walk that goes on
-- from where the last one stopped. Members of one score are ordered by their bytes (as
-- Redis orders them), so a cursor is (score, last member taken): the members a walk moved
-- may leave the set meanwhile without the next walk skipping any it never read.
--
-- KEYS[1] sorted set
-- ARGV[1] cursor score ("-inf" to start)   ARGV[2] last member taken at it ("" none)
-- ARGV[3] highest score wanted             ARGV[4] most members returned
--
-- Returns {member, score, member, score, ...} in (score, member) order.

local key, lo, last, hi, n = KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {}

-- byte order, as Redis orders the members of one score (Lua's own '<' follows the locale)
local function after(a, b)
  local la, lb = #a, #b
  for i = 1, math.min(la, lb) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return la > lb
end

local function take(pairs)
  for i = 1, #pairs, 2 do
    if #out >= 2 * n then return end
    out[#out + 1] = pairs[i]
    out[#out + 1] = pairs[i + 1]
  end
end

local from = lo
if last ~= '' then
  from = '(' .. lo
  local score = redis.call('ZSCORE', key, last)
  if score and tonumber(score) == tonumber(lo) then
    -- still there: the ties after it start right after its rank
    local skip = redis.call('ZRANK', key, last) - redis.call('ZCOUNT', key, '-inf', '(' .. lo) + 1
    take(redis.call('ZRANGEBYSCORE', key, lo, lo, 'WITHSCORES', 'LIMIT', skip, n))
  else
    -- it left the set: read the ties page by page, keeping those after it
    local off = 0
    while #out < 2 * n do
      local ties = redis.call('ZRANGEBYSCORE', key, lo, lo, 'WITHSCORES', 'LIMIT', off, 128)
      if #ties == 0 then break end
      local kept = {}
      for i = 1, #ties, 2 do
        if after(ties[i], last) then
          kept[#kept + 1] = ties[i]
          kept[#kept + 1] = ties[i + 1]
        end
      end
      take(kept)
      off = off + 128
    end
  end
end
if #out < 2 * n then
  take(redis.call('ZRANGEBYSCORE', key, from, hi, 'WITHSCORES', 'LIMIT', 0, n - #out / 2))
end
return out
