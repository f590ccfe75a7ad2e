-- Atomic fleet-wide token buckets. KEYS: one bucket per limit; ARGV: capacity and need per
-- key, in pairs. Takes every need or nothing; returns "0" when granted, else the seconds to
-- wait (a string: Lua numbers become integers on the way out). Redis's own clock refills.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local levels = {}
local wait = 0
for i = 1, #KEYS do
  local cap = tonumber(ARGV[2 * i - 1])
  local need = tonumber(ARGV[2 * i])
  local h = redis.call('HMGET', KEYS[i], 'level', 'ts')
  local level = tonumber(h[1]) or cap
  local ts = tonumber(h[2]) or now
  level = math.min(cap, level + math.max(0, now - ts) * cap / 60)
  levels[i] = level
  if level < need then
    wait = math.max(wait, (need - level) * 60 / cap)
  end
end
for i = 1, #KEYS do
  local level = levels[i]
  if wait == 0 then
    level = level - tonumber(ARGV[2 * i])
  end
  redis.call('HSET', KEYS[i], 'level', tostring(level), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[i], 120)
end
return tostring(wait)
