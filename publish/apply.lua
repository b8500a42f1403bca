-- Applies one view's pre-aggregated delta for one shard, atomically:
-- measure hashes, item counts, fence, epoch, version and the pub/sub
-- message.
--
-- KEYS[1] meta hash, KEYS[2] item-count hash, KEYS[3..] one hash per measure
-- ARGV[1] fence field        ARGV[2] expected fence ('' = none)
-- ARGV[3] new fence          ARGV[4] updated_ms
-- ARGV[5] channel
-- ARGV[6] message up to the epoch, ARGV[7] between epoch and version,
-- ARGV[8] after the version (a bucketed view: the opening of "buckets")
-- ARGV[9] measure kinds, one letter per measure key: c(ount) or s(um)
-- ARGV[10] PUBLISH, or SPUBLISH in a cluster
-- ARGV[11] a fresh epoch, taken when the view has none yet or when
--   ARGV[12] asks for a new one
-- ARGV[12] '' to continue the view's epoch; '=' .. E to start a new epoch
--   unless the view's epoch moved on from E already (another reader
--   started one since the caller looked)
-- ARGV[13] '' for a view without buckets
-- ARGV[14..] per group: key, count delta, then one decimal delta per sum
--
-- A bucketed view instead has:
-- KEYS[2] the bucket index (ZSET), then per bucket its item-count hash and
--   one hash per measure
-- ARGV[13] 'items' (buckets by item time), or 'net' (by stream time: a
--   bucket holds net changes, so a group stays while any value is not 0)
-- ARGV[14] the message's end, after the buckets
-- ARGV[15] bucket size plus retention, ms: a bucket whose start is that
--   long before Redis's clock has expired
-- ARGV[16..] per bucket: name, start (Unix seconds, the index score),
--   expiry (Unix ms), its part of the message ('' if nothing visible
--   changed), number of groups, then the groups as above
--
-- Returns {1, version} when applied (version 0: nothing a reader can see
-- changed, and only the fence moved), {0, current fence} when the fence
-- moved, {2, reason} when the view is marked lost, {3, hold} while a
-- recount holds the view.

-- Sums are exact decimals kept as strings: Lua numbers are doubles, and
-- HINCRBYFLOAT is a long double, so neither may touch them.
local function parse(s)
  local neg = string.sub(s, 1, 1) == '-'
  if neg then s = string.sub(s, 2) end
  local i, f = string.match(s, '^(%d*)%.?(%d*)$')
  return neg, i or '0', f or ''
end

local function add_digits(a, b)
  local out, carry = {}, 0
  for k = #a, 1, -1 do
    local d = string.byte(a, k) + string.byte(b, k) - 96 + carry
    if d >= 10 then d, carry = d - 10, 1 else carry = 0 end
    out[k] = d
  end
  local r = table.concat(out)
  if carry == 1 then r = '1' .. r end
  return r
end

-- a >= b, same length
local function sub_digits(a, b)
  local out, borrow = {}, 0
  for k = #a, 1, -1 do
    local d = string.byte(a, k) - string.byte(b, k) - borrow
    if d < 0 then d, borrow = d + 10, 1 else borrow = 0 end
    out[k] = d
  end
  return table.concat(out)
end

local function dec_add(a, b)
  local an, ai, af = parse(a)
  local bn, bi, bf = parse(b)
  local fl = math.max(#af, #bf)
  af = af .. string.rep('0', fl - #af)
  bf = bf .. string.rep('0', fl - #bf)
  local ad, bd = ai .. af, bi .. bf
  local l = math.max(#ad, #bd)
  ad = string.rep('0', l - #ad) .. ad
  bd = string.rep('0', l - #bd) .. bd
  local rd, rneg
  if an == bn then
    rd, rneg = add_digits(ad, bd), an
  elseif ad >= bd then
    rd, rneg = sub_digits(ad, bd), an
  else
    rd, rneg = sub_digits(bd, ad), bn
  end
  local ip = string.gsub(string.sub(rd, 1, #rd - fl), '^0+', '')
  local fp = string.gsub(string.sub(rd, #rd - fl + 1), '0+$', '')
  if ip == '' then ip = '0' end
  local r = ip
  if fp ~= '' then r = r .. '.' .. fp end
  if r == '0' then return '0' end
  if rneg then return '-' .. r end
  return r
end

-- seq_less compares stream sequence numbers, decimal strings of varying
-- width, as numbers.
local function seq_less(a, b)
  a = string.gsub(a, '^0+', '')
  b = string.gsub(b, '^0+', '')
  if #a ~= #b then return #a < #b end
  return a < b
end

-- Redis's own clock, in ms: holds and bucket expiry are judged by the one
-- clock that sets them, never by the caller's.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local meta = KEYS[1]
-- A recount holds the view ('<token>:<deadline ms>') while it catches up
-- and swaps: the caller retries the batch, so fences and checkpoints stay
-- where the recount read them. A hold past its deadline is ignored, so a
-- recount that died blocks nothing for long.
local hold = redis.call('HGET', meta, 'hold')
if hold and now < tonumber(string.match(hold, ':(%d+)$') or '0') then
  return {3, hold}
end
local lost = redis.call('HGET', meta, 'lost')
if lost then
  -- The counters are not touched, but the fence still follows the stream,
  -- so that it never trails a checkpoint and a recount's hold freezes every
  -- position the recount must reach.
  local cur = redis.call('HGET', meta, ARGV[1]) or ''
  if seq_less(cur, ARGV[3]) then
    redis.call('HSET', meta, ARGV[1], ARGV[3])
  end
  return {2, lost}
end
local cur = redis.call('HGET', meta, ARGV[1]) or ''
if cur ~= ARGV[2] then
  return {0, cur}
end

-- The epoch names the history the versions count in. A reader that cannot
-- prove it continues what subscribers saw starts a new one, once.
local epoch = redis.call('HGET', meta, 'epoch')
if ARGV[12] ~= '' and (epoch or '') == string.sub(ARGV[12], 2) then
  epoch = nil
end
if not epoch then
  epoch = ARGV[11]
  redis.call('HSET', meta, 'epoch', epoch)
end

local kinds = ARGV[9]
local nm = #kinds
local nsum = 0
for k = 1, nm do
  if string.sub(kinds, k, k) == 's' then nsum = nsum + 1 end
end

-- Applies n groups from ARGV[i] on to the item counts in KEYS[base] and
-- the measure hashes after it; returns the index past them. A group leaves
-- every hash when its item count reaches 0; with net, only once its sums
-- are 0 as well, since a net change can move a sum without moving items.
local function apply_groups(base, i, n, net)
  local items = KEYS[base]
  for _ = 1, n do
    local g, dc = ARGV[i], tonumber(ARGV[i + 1])
    local c
    if dc ~= 0 then
      c = redis.call('HINCRBY', items, g, dc)
    else
      c = tonumber(redis.call('HGET', items, g) or '0')
    end
    local gone = c == 0
    if not gone or net then
      local s = 0
      for k = 1, nm do
        if string.sub(kinds, k, k) == 'c' then
          if dc ~= 0 or net then redis.call('HSET', KEYS[base + k], g, c) end
        else
          s = s + 1
          local d = ARGV[i + 1 + s]
          local v = '0'
          if d ~= '0' then
            local old = redis.call('HGET', KEYS[base + k], g) or '0'
            v = dec_add(old, d)
            redis.call('HSET', KEYS[base + k], g, v)
          elseif net then
            v = redis.call('HGET', KEYS[base + k], g) or '0'
            if v == '0' then redis.call('HSET', KEYS[base + k], g, '0') end
          elseif dc ~= 0 then
            -- A group entering with a zero sum still shows it as '0'.
            redis.call('HSETNX', KEYS[base + k], g, '0')
          end
          if v ~= '0' then gone = false end
        end
      end
    end
    if net and not gone and dc == 0 then
      -- Keep the group's count, 0, so that the bucket's _items hash
      -- exists as long as one of its groups shows a value.
      redis.call('HSETNX', items, g, 0)
    end
    if gone then
      -- The group has no items left: it leaves every hash of the view.
      redis.call('HDEL', items, g)
      for k = 1, nm do redis.call('HDEL', KEYS[base + k], g) end
    end
    i = i + 2 + nsum
  end
  return i
end

local body
if ARGV[13] == '' then
  if #ARGV < 14 then
    -- Nothing a reader can see changed; the fence still moves so that it
    -- covers every record the consumer checkpoints.
    redis.call('HSET', meta, ARGV[1], ARGV[3])
    return {1, 0}
  end
  apply_groups(2, 14, (#ARGV - 13) / (2 + nsum), false)
  body = ARGV[8]
else
  local net = ARGV[13] == 'net'
  local index = KEYS[2]
  local base, i = 3, 16
  local applied, parts = 0, {}
  while i <= #ARGV do
    local name, start, expire, part, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], tonumber(ARGV[i + 4])
    if expire <= now then
      -- Redis has expired the bucket, or is about to: a change would
      -- bring it back with partial numbers, and a message about it would
      -- announce groups no hash holds. Only its keys' expiry is enforced.
      i = i + 5 + n * (2 + nsum)
      for k = 0, nm do redis.call('DEL', KEYS[base + k]) end
      redis.call('ZREM', index, name)
    else
      i = apply_groups(base, i + 5, n, net)
      for k = 0, nm do redis.call('PEXPIREAT', KEYS[base + k], expire) end
      if redis.call('EXISTS', KEYS[base]) == 1 then
        redis.call('ZADD', index, start, name)
      else
        redis.call('ZREM', index, name)
      end
      applied = applied + 1
      if part ~= '' then parts[#parts + 1] = part end
    end
    base = base + 1 + nm
  end
  redis.call('ZREMRANGEBYSCORE', index, '-inf', math.floor((now - tonumber(ARGV[15])) / 1000))
  if applied == 0 then
    redis.call('HSET', meta, ARGV[1], ARGV[3])
    return {1, 0}
  end
  body = ARGV[8] .. table.concat(parts, ',') .. ARGV[14]
end

redis.call('HSET', meta, ARGV[1], ARGV[3], 'updated_ms', ARGV[4])
local v = redis.call('HINCRBY', meta, 'version', 1)
redis.call(ARGV[10], ARGV[5], ARGV[6] .. epoch .. ARGV[7] .. v .. body)
return {1, v}
