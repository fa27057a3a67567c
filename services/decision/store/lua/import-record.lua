-- import-record.lua: writes one exported record with its absolute expiry time, unless the key
-- holds the same record as new or newer: a restore never replaces newer state.
-- KEYS[1]  the record's key
-- ARGV[1]  "hash" or "string"
-- ARGV[2]  expiry, epoch ms
-- ARGV[3]  how new the record is (restoreOrder in store.ts): compared with a stored hash's field
--          l (last seen), or with a stored string's value (an end, epoch ms)
-- ARGV[4..] hash: field, value, field, value, ...; string: the value
-- Returns 1 when written, 0 when the stored record stays.
local stored
if ARGV[1] == 'hash' then
  stored = tonumber(redis.call('HGET', KEYS[1], 'l'))
else
  stored = tonumber(redis.call('GET', KEYS[1]))
end
if stored ~= nil and stored >= tonumber(ARGV[3]) then
  return 0
end
redis.call('DEL', KEYS[1])
if ARGV[1] == 'hash' then
  for i = 4, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
else
  redis.call('SET', KEYS[1], ARGV[4])
end
redis.call('PEXPIREAT', KEYS[1], tonumber(ARGV[2]))
return 1
