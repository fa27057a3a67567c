-- lists-remove.lua: removes list entries and bumps the lists version, atomically.
-- KEYS[1]  entries hash
-- KEYS[2]  lists version counter
-- ARGV     fields "<kind>\0<value>" to remove
-- Returns { entries removed, new lists version }.
local removed = 0
for i = 1, #ARGV do
  removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
end
return { removed, redis.call('INCR', KEYS[2]) }
