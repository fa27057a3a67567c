-- learn-outbound.lua: remembers that a local user wrote to an external address, so that the
-- reply is accepted at once.
-- KEYS[1]  outbound pair string (value: when it is forgotten, epoch ms)
-- ARGV[1]  time to live ms (the greylist's max-age)
-- ARGV[2]  clock offset ms added to Redis TIME ("0" in production)
-- Returns the expiry, epoch ms.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + tonumber(ARGV[2])
local ttl = tonumber(ARGV[1])
redis.call('SET', KEYS[1], now + ttl, 'PX', ttl)
return now + ttl
