-- lists-put.lua: adds or replaces list entries and bumps the lists version, atomically, so a
-- decision process that sees the new version reads every new entry.
-- KEYS[1]  entries hash (field "<kind>\0<value>", value the entry as JSON)
-- KEYS[2]  lists version counter
-- ARGV     field, json, field, json, ...
-- Returns the new lists version.
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return redis.call('INCR', KEYS[2])
