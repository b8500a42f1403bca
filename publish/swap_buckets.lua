-- Swaps a rebuilt bucketed view in for readers, atomically, as swap.lua
-- does for a view without buckets: every fresh bucket hash replaces its
-- live one (keeping the fresh key's expiry), a live bucket without a fresh
-- one goes, and the index is rebuilt from the buckets that hold items.
--
-- KEYS[1] meta hash, KEYS[2] bucket index, KEYS[3] fresh bucket list
-- KEYS[4..] per bucket, per hash (item counts, then each measure): live
--   hash, fresh hash
-- ARGV[1..6] as in swap.lua
-- ARGV[7] number of buckets n, ARGV[8 .. 7+2n] per bucket: name, start
-- ARGV[8+2n ..] per shard: fence field, fence expected ('' = none), new fence
--
-- Returns {1, version} when swapped, {0, why} when the hold is gone, a
-- fence moved, or the index lists a bucket the caller did not declare:
-- nothing is changed then.

local meta, index, fresh = KEYS[1], KEYS[2], KEYS[3]
local hold = redis.call('HGET', meta, 'hold') or ''
if string.sub(hold, 1, #ARGV[1] + 1) ~= ARGV[1] .. ':' then
  return {0, 'hold lost: ' .. hold}
end
local n = tonumber(ARGV[7])
local f0 = 8 + 2 * n
for i = f0, #ARGV, 3 do
  local cur = redis.call('HGET', meta, ARGV[i]) or ''
  if cur ~= ARGV[i + 1] then
    return {0, ARGV[i] .. ' moved to ' .. cur}
  end
end
local declared = {}
for b = 0, n - 1 do declared[ARGV[8 + 2 * b]] = true end
for _, name in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', '+inf')) do
  if not declared[name] then
    return {0, 'bucket ' .. name .. ' appeared'}
  end
end
local per = 0
if n > 0 then per = (#KEYS - 3) / n end
redis.call('DEL', index)
for b = 0, n - 1 do
  local base = 4 + b * per
  for k = base, base + per - 1, 2 do
    if redis.call('EXISTS', KEYS[k + 1]) == 1 then
      redis.call('RENAME', KEYS[k + 1], KEYS[k])
    else
      redis.call('DEL', KEYS[k])
    end
  end
  -- The item counts come first: the bucket holds items while they exist.
  if redis.call('EXISTS', KEYS[base]) == 1 then
    redis.call('ZADD', index, ARGV[9 + 2 * b], ARGV[8 + 2 * b])
  end
end
redis.call('DEL', fresh)
for i = f0, #ARGV, 3 do
  redis.call('HSET', meta, ARGV[i], ARGV[i + 2])
end
redis.call('HDEL', meta, 'lost', 'hold')
redis.call('HSET', meta, 'updated_ms', ARGV[2])
local v = redis.call('HINCRBY', meta, 'version', 1)
redis.call(ARGV[6], ARGV[3], ARGV[4] .. v .. ARGV[5])
return {1, v}
