-- delete-keys.lua: forgets records (a triplet, or everything of one network).
-- KEYS     the keys to delete (one slot: one network's keys)
-- Returns how many existed.
return redis.call('DEL', unpack(KEYS))
