-- inspect.lua: reads a triplet, its client network and the network's greytrap block in one
-- consistent snapshot, with the clock the decision would use. Writes nothing.
-- KEYS[1]  triplet hash, KEYS[2] client hash, KEYS[3] block string (one slot)
-- ARGV[1]  clock offset ms added to Redis TIME ("0" in production)
-- Returns { now_ms, {f, p, l}, triplet pttl ms, {n, c, l}, block end ms or false }.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + tonumber(ARGV[1])
return {
  now,
  redis.call('HMGET', KEYS[1], 'f', 'p', 'l'),
  redis.call('PTTL', KEYS[1]),
  redis.call('HMGET', KEYS[2], 'n', 'c', 'l'),
  redis.call('GET', KEYS[3]),
}
