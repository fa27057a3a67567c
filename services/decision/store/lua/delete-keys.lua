-- delete-keys.lua: forgets records (a triplet, or everything of one network).
-- KEYS     the keys to delete (one slot: one network's keys)
-- Returns how many existed.
-- DEL gets them a thousand at a time: Lua's unpack() fails past about 8,000 values, and a
-- spamming network can hold more pending triplets than that.
local deleted = 0
for first = 1, #KEYS, 1000 do
  deleted = deleted + redis.call('DEL', unpack(KEYS, first, math.min(first + 999, #KEYS)))
end
return deleted
