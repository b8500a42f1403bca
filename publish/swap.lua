-- Swaps a rebuilt view in for readers, atomically: the fresh hashes replace
-- the live ones, the fences move to where the rebuild's count ends, the
-- lost mark and the hold go, the version moves on, and one message tells
-- subscribers to take a fresh snapshot.
--
-- KEYS[1] meta hash, KEYS[2..] pairs: live hash, fresh hash
-- ARGV[1] hold token         ARGV[2] updated_ms
-- ARGV[3] channel            ARGV[4], ARGV[5] message around the version
-- ARGV[6] PUBLISH or SPUBLISH
-- ARGV[7..] per shard: fence field, fence expected ('' = none), new fence
--
-- Returns {1, version} when swapped, {0, why} when the hold is gone or a
-- fence moved since the rebuild read it: nothing is changed then.

local meta = KEYS[1]
local hold = redis.call('HGET', meta, 'hold') or ''
if string.sub(hold, 1, #ARGV[1] + 1) ~= ARGV[1] .. ':' then
  return {0, 'hold lost: ' .. hold}
end
for i = 7, #ARGV, 3 do
  local cur = redis.call('HGET', meta, ARGV[i]) or ''
  if cur ~= ARGV[i + 1] then
    return {0, ARGV[i] .. ' moved to ' .. cur}
  end
end
for k = 2, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[k + 1]) == 1 then
    redis.call('RENAME', KEYS[k + 1], KEYS[k])
  else
    redis.call('DEL', KEYS[k])
  end
end
for i = 7, #ARGV, 3 do
  redis.call('HSET', meta, ARGV[i], ARGV[i + 2])
end
redis.call('HDEL', meta, 'lost', 'hold')
redis.call('HSET', meta, 'updated_ms', ARGV[2])
local v = redis.call('HINCRBY', meta, 'version', 1)
redis.call(ARGV[6], ARGV[3], ARGV[4] .. v .. ARGV[5])
return {1, v}
