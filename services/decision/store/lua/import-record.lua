-- import-record.lua: writes one exported record with its absolute expiry time.
-- KEYS[1]  the record's key
-- ARGV[1]  "hash" or "string"
-- ARGV[2]  expiry, epoch ms
-- ARGV[3..] hash: field, value, field, value, ...; string: the value
-- Returns 1.
redis.call('DEL', KEYS[1])
if ARGV[1] == 'hash' then
  for i = 3, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
else
  redis.call('SET', KEYS[1], ARGV[3])
end
redis.call('PEXPIREAT', KEYS[1], tonumber(ARGV[2]))
return 1
