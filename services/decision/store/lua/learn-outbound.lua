-- learn-outbound.lua: remembers that a local user wrote to an external address, so that the
-- reply is accepted at once.
-- KEYS[1]  outbound pair string
-- ARGV[1]  time to live ms (the greylist's max-age)
-- Returns 1.
redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[1]))
return 1
