-- Store an accepted event durably, numbered in arrival order, and note its run for the sweep.
-- KEYS[1] inbox hash, KEYS[2] inbox-runs zset, KEYS[3] sequence counter.
-- ARGV[1] event id, ARGV[2] event JSON, ARGV[3] run id, ARGV[4] accepted_at (epoch s).
-- The hash value is "<seq>|<json>". Returns the sequence number.
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], ARGV[1], seq .. '|' .. ARGV[2])
redis.call('ZADD', KEYS[2], 'NX', ARGV[4], ARGV[3])
return seq
