-- Writes groups, as whole values, into the fresh hashes of a recount, if
-- the recount still holds the view's lease: a run that lost it (it paused
-- past its lease, and another run took the view) can no longer write, so
-- the run that holds the lease owns every fresh key under its token.
--
-- KEYS[1] the recount lease, KEYS[2] the run's list of its fresh keys,
-- then per bucket (one for a view without buckets) its fresh item-count
-- hash and one fresh hash per measure
-- ARGV[1] token
-- ARGV[2] measure kinds, one letter per measure key: c(ount) or s(um)
-- ARGV[3..] per bucket: expiry (Unix ms, '' = none), number of groups,
--   then per group: key, item count, then one decimal per sum; a group
--   with no items is removed
--
-- Returns 1, or 0 when the lease is not the caller's: nothing is written.

local token = ARGV[1]
local owner = redis.call('GET', KEYS[1]) or ''
if string.sub(owner, 1, #token + 1) ~= token .. '|' then
  return 0
end
local kinds = ARGV[2]
local nm = #kinds
local base, i = 3, 3
while i <= #ARGV do
  local expire, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  for _ = 1, n do
    local g, c = ARGV[i], ARGV[i + 1]
    i = i + 2
    if c == '0' then
      for k = 0, nm do redis.call('HDEL', KEYS[base + k], g) end
    else
      redis.call('HSET', KEYS[base], g, c)
    end
    for k = 1, nm do
      if string.sub(kinds, k, k) == 's' then
        if c ~= '0' then redis.call('HSET', KEYS[base + k], g, ARGV[i]) end
        i = i + 1
      elseif c ~= '0' then
        redis.call('HSET', KEYS[base + k], g, c)
      end
    end
  end
  for k = 0, nm do
    redis.call('SADD', KEYS[2], KEYS[base + k])
    if expire ~= '' then redis.call('PEXPIREAT', KEYS[base + k], expire) end
  end
  base = base + 1 + nm
end
return 1
