-- block-network.lua: greytraps a client network for a while (fleet-wide).
-- KEYS[1]  block string of the network (hash-tagged like its triplets)
-- ARGV[1]  duration ms
-- ARGV[2]  clock offset ms added to Redis TIME ("0" in production)
-- Returns the end of the block, epoch ms (also the key's value; the key expires then).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + tonumber(ARGV[2])
local duration = tonumber(ARGV[1])
redis.call('SET', KEYS[1], now + duration, 'PX', duration)
return now + duration
