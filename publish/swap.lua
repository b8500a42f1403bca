-- Swaps a recounted view in for readers, atomically: the fresh hashes the
-- recount wrote under its token replace the live ones, the fences move to
-- where the recount ends, the lost mark and the hold go, a new epoch
-- begins, the version moves on, and one message tells subscribers to take
-- a fresh snapshot.
--
-- KEYS[1] meta hash, KEYS[2] the recount lease, KEYS[3] the set of runs
-- with fresh keys, KEYS[4] this run's list of its fresh keys, then for a
-- bucketed view KEYS[5] the bucket index, then per bucket, per hash (item
-- counts, then each measure): live hash, fresh hash
-- ARGV[1] token              ARGV[2] updated_ms
-- ARGV[3] channel            ARGV[4], ARGV[5], ARGV[6] message around the
--   epoch and the version
-- ARGV[7] PUBLISH or SPUBLISH
-- ARGV[8] the new epoch
-- ARGV[9] '' for a view without buckets, 'buckets' for one with
-- ARGV[10] number of measures m: each bucket has 1 + m hashes
-- ARGV[11] number of shards n, then per shard: fence field, fence expected
--   ('' = none), new fence
-- then per bucket (one, named '', for a view without buckets): name, start
--   (the index score), expiry (Unix ms, '' = never), and the number of
--   groups the recount wrote into it
--
-- The recount says how many groups each bucket holds, so that a view or a
-- bucket without groups is one it wrote as such, never one inferred from
-- a missing key: fresh keys that Redis lost (a failover, an eviction)
-- refuse the swap instead of emptying the view.
--
-- Returns {1, version} when swapped, {0, why} when the lease or the hold
-- is gone, a fence moved since the recount read it, the index lists a
-- bucket the caller did not declare, or a fresh hash does not hold what
-- the recount wrote: nothing is changed then.

local meta, lease, runs, mine = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token = ARGV[1]
local owner = redis.call('GET', lease) or ''
if string.sub(owner, 1, #token + 1) ~= token .. '|' then
  local holder = string.match(owner, '|(.*)$') or ''
  return {0, 'the recount lease is no longer ours: ' .. (owner == '' and 'it lapsed' or 'held by ' .. holder)}
end
local hold = redis.call('HGET', meta, 'hold') or ''
if string.sub(hold, 1, #token + 1) ~= token .. ':' then
  return {0, 'hold lost: ' .. hold}
end
local nf = tonumber(ARGV[11])
local f0 = 12
for i = f0, f0 + 3 * nf - 1, 3 do
  local cur = redis.call('HGET', meta, ARGV[i]) or ''
  if cur ~= ARGV[i + 1] then
    return {0, ARGV[i] .. ' moved to ' .. cur}
  end
end
local bucketed = ARGV[9] ~= ''
local per = 1 + tonumber(ARGV[10])
local b0 = f0 + 3 * nf
local k0 = 5
local index
if bucketed then
  index, k0 = KEYS[5], 6
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Check everything before changing anything.
local declared, nb = {}, 0
for i = b0, #ARGV, 4 do
  local name, expire, want = ARGV[i], ARGV[i + 2], tonumber(ARGV[i + 3])
  declared[name] = true
  local live = expire == '' or tonumber(expire) > now
  local base = k0 + nb * 2 * per
  if live and want > 0 then
    for k = base, base + 2 * per - 1, 2 do
      local have = redis.call('HLEN', KEYS[k + 1])
      if have ~= want then
        return {0, 'fresh hash ' .. KEYS[k + 1] .. ' holds ' .. have .. ' groups, the recount wrote ' .. want .. ': Redis lost writes during the recount'}
      end
    end
  end
  nb = nb + 1
end
if bucketed then
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', '+inf')) do
    if not declared[name] then
      return {0, 'bucket ' .. name .. ' appeared'}
    end
  end
  redis.call('DEL', index)
end

local b = 0
for i = b0, #ARGV, 4 do
  local name, start, expire, want = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local live = expire == '' or tonumber(expire) > now
  local base = k0 + b * 2 * per
  for k = base, base + 2 * per - 1, 2 do
    if live and want > 0 then
      -- RENAME keeps the fresh key's expiry: a bucket's, or none.
      redis.call('RENAME', KEYS[k + 1], KEYS[k])
    else
      redis.call('DEL', KEYS[k], KEYS[k + 1])
    end
  end
  if bucketed and live and want > 0 then
    redis.call('ZADD', index, start, name)
  end
  b = b + 1
end
redis.call('DEL', mine)
redis.call('SREM', runs, token)
for i = f0, f0 + 3 * nf - 1, 3 do
  redis.call('HSET', meta, ARGV[i], ARGV[i + 2])
end
redis.call('HDEL', meta, 'lost', 'hold')
redis.call('HSET', meta, 'updated_ms', ARGV[2], 'epoch', ARGV[8])
local v = redis.call('HINCRBY', meta, 'version', 1)
redis.call(ARGV[7], ARGV[3], ARGV[4] .. ARGV[8] .. ARGV[5] .. v .. ARGV[6])
return {1, v}
