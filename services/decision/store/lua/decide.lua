-- decide.lua: one greylisting decision, atomically, in one round trip.
-- The same rules as services/decision/domain/verdict.ts; test/conformance holds both to them.
--
-- KEYS[1]  triplet hash   fields f = first seen ms, p = passed ms (absent while pending), l = last seen ms
-- KEYS[2]  client hash    fields n = counted deliveries, c = last counted ms, l = last seen ms
-- KEYS[3]  block string   the end of the network's greytrap block, epoch ms
--          (these three carry the client network's hash tag: one Redis Cluster slot)
-- KEYS[4]  outbound pair string (value: when it is forgotten, epoch ms), or "" or absent to
--          not look one up; it lives in another slot, so on Redis Cluster the caller passes only
--          three keys and reads the pair with a GET sent alongside
-- ARGV[1]  the policy, one string "delay_ms,retry_window_ms,max_age_ms,awl_passes,awl_interval_ms"
--          (awl_passes 0 = auto-whitelist off); one string is cheaper to send than five
-- ARGV[2]  single use: "1" when the pass is consumed by one message (null sender), else "0"
-- ARGV[3]  clock offset ms added to Redis TIME ("0" in production; tests move time with it)
--
-- Returns { code, ms, now_ms }:
--   code 1 new triplet (deferred), ms = retry after
--   code 2 too early (deferred),   ms = retry after
--   code 3 passed after retry,     ms = how long it was delayed
--   code 4 known triplet
--   code 5 client auto-whitelisted
--   code 6 the network is greytrapped (nothing written)
--   code 7 a reply to a local user's outgoing mail (the triplet is recorded as usual)
-- now_ms is the clock reading the decision was made at (Redis TIME + offset).

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + tonumber(ARGV[3])
local d, w, m, p, i = string.match(ARGV[1], '^(%d+),(%d+),(%d+),(%d+),(%d+)$')
if d == nil then return redis.error_reply('greyfleet decide.lua: malformed policy argument') end
local delay = tonumber(d)
local window = tonumber(w)
local max_age = tonumber(m)
local awl_passes = tonumber(p)
local awl_interval = tonumber(i)

local blocked_until = tonumber(redis.call('GET', KEYS[3]))
if blocked_until ~= nil and blocked_until > now then
  return { 6, 0, now }
end

local function triplet_decision()
  -- Expiry is decided from the records' own times (TTLs only collect the garbage), exactly as in
  -- verdict.ts, so a store clock that is moved (tests) or a TTL that lags never changes a verdict.
  local client = redis.call('HMGET', KEYS[2], 'n', 'c', 'l')
  local client_n = tonumber(client[1])
  local client_c = tonumber(client[2])
  if client_n ~= nil and now - (tonumber(client[3]) or 0) >= max_age then
    client_n = nil
    client_c = nil
  end

  -- Counts an accepted delivery for the client network, at most once per interval.
  local function count_delivery()
    local n = client_n or 0
    local c = client_c
    if c == nil or now - c >= awl_interval then
      redis.call('HSET', KEYS[2], 'n', n + 1, 'c', now, 'l', now)
    else
      redis.call('HSET', KEYS[2], 'l', now)
    end
    redis.call('PEXPIRE', KEYS[2], max_age)
  end

  if awl_passes > 0 and client_n ~= nil and client_n >= awl_passes then
    redis.call('HSET', KEYS[2], 'l', now)
    redis.call('PEXPIRE', KEYS[2], max_age)
    return 5, 0
  end

  local record = redis.call('HMGET', KEYS[1], 'f', 'p', 'l')
  local first = tonumber(record[1])
  local passed = tonumber(record[2])
  if passed ~= nil and now - (tonumber(record[3]) or 0) >= max_age then
    first = nil
    passed = nil
  end

  if first ~= nil and passed ~= nil then
    redis.call('HSET', KEYS[1], 'l', now)
    redis.call('PEXPIRE', KEYS[1], max_age)
    count_delivery()
    return 4, 0
  end

  local age = -1
  if first ~= nil then age = now - first end

  if first == nil or age >= window or age < 0 then
    -- Unknown, retried after the window, or first seen "in the future" after a clock step.
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[1], 'f', now, 'l', now)
    redis.call('PEXPIRE', KEYS[1], window)
    return 1, delay
  end

  if age < delay then
    -- Too early: first seen is kept, so hammering does not extend the delay.
    redis.call('HSET', KEYS[1], 'l', now)
    return 2, delay - age
  end

  if ARGV[2] == '1' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('HSET', KEYS[1], 'p', now, 'l', now)
    redis.call('PEXPIRE', KEYS[1], max_age)
  end
  count_delivery()
  return 3, age
end

local code, ms = triplet_decision()
if KEYS[4] ~= nil and KEYS[4] ~= '' then
  local pair_until = tonumber(redis.call('GET', KEYS[4]))
  if pair_until ~= nil and pair_until > now then
    return { 7, 0, now }
  end
end
return { code, ms, now }
