"""Lua scripts of the lease: each one runs atomically on the Redis server.

Values are built here in Lua with the same shape as ``model.encode_lease``;
``%d`` keeps epochs integral (Lua numbers are doubles, exact up to 2^53).
"""

from __future__ import annotations

# KEYS: leader, epoch counter, control. ARGV: node, ttl_ms, epoch floor, wake channel.
# Free key, or a released lease naming this node: take it with an epoch one more than
# the largest of the counter, the floor and the released value's epoch; never for a
# node whose data is marked outdated (its DRBD must not be promoted).
# Returns {epoch, value} on success, {0, current value} when the key is not free,
# {-1, mark} when this node is marked outdated.
ACQUIRE = r"""
local cur = redis.call('GET', KEYS[1])
local n = 0
if cur then
  local ok, val = pcall(cjson.decode, cur)
  if not (ok and type(val) == 'table' and val.v == 1 and type(val.next) == 'string'
          and val.next == ARGV[1] and type(val.epoch) == 'number') then
    return {0, cur}
  end
  n = val.epoch
end
local mark = redis.call('HGET', KEYS[3], 'outdated:' .. ARGV[1])
if mark then return {-1, mark} end
local stored = redis.call('GET', KEYS[2])
if stored then
  local s = tonumber(stored)
  if not s then
    return redis.error_reply('BADEPOCH the epoch counter does not hold a number')
  end
  if s > n then n = s end
end
local floor = tonumber(ARGV[3])
if floor > n then n = floor end
n = n + 1
local value = '{"epoch":' .. string.format('%d', n) .. ',"holder":' .. cjson.encode(ARGV[1])
  .. ',"v":1}'
redis.call('SET', KEYS[2], string.format('%d', n))
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[4], 'lease_acquired')
return {n, value}
"""

# KEYS: leader. ARGV: node, epoch, ttl_ms. Compare-and-expire on the holder's own value.
RENEW = r"""
local cur = redis.call('GET', KEYS[1])
if not cur then return {'missing'} end
local ok, val = pcall(cjson.decode, cur)
if ok and type(val) == 'table' and val.v == 1 and val.holder == ARGV[1]
   and val.epoch == tonumber(ARGV[2]) and val.next == nil then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'renewed'}
end
return {'other', cur}
"""

# KEYS: leader, released mark. ARGV: node, epoch, next node ('' for none), wake channel,
# planned ('1': a switchover, failback, cordon or stop, not a health failover).
# Compare-and-delete; naming a next node leaves a released value (same expiry) that
# only that node may take, so it can take it at once. The mark keeps the epoch given
# up: a node that takes the next epoch knows its holder let it go (no fence_command).
RELEASE = r"""
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local ok, val = pcall(cjson.decode, cur)
if not (ok and type(val) == 'table' and val.v == 1 and val.holder == ARGV[1]
        and val.epoch == tonumber(ARGV[2]) and val.next == nil) then
  return 0
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
else
  local planned = ''
  if ARGV[5] == '1' then planned = ',"planned":true' end
  local value = '{"epoch":' .. string.format('%d', tonumber(ARGV[2])) .. ',"holder":'
    .. cjson.encode(ARGV[1]) .. ',"next":' .. cjson.encode(ARGV[3]) .. planned .. ',"v":1}'
  redis.call('SET', KEYS[1], value, 'KEEPTTL')
end
redis.call('SET', KEYS[2], string.format('%d', tonumber(ARGV[2])))
redis.call('PUBLISH', ARGV[4], 'lease_released')
return 1
"""

# KEYS: control. ARGV: request id, wake channel. Clears the switchover only if it is
# still the same request (a newer one is kept).
CLEAR_SWITCHOVER = r"""
local cur = redis.call('HGET', KEYS[1], 'switchover')
if not cur then return 0 end
local ok, val = pcall(cjson.decode, cur)
if ARGV[1] ~= '' and not (ok and type(val) == 'table' and val.id == ARGV[1]) then
  return 0
end
redis.call('HDEL', KEYS[1], 'switchover')
redis.call('PUBLISH', ARGV[2], 'control')
return 1
"""

# KEYS: leader, control. ARGV: node, mark value, wake channel.
# DRBD's fence-peer handler: mark ``node``'s data outdated unless it holds the lease
# (a holder is the Primary: DRBD must outdate the caller instead). One script, so no
# acquire can come between the lease check and the mark.
# Returns {'marked'} or {'holder', lease value}.
MARK_OUTDATED = r"""
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, val = pcall(cjson.decode, cur)
  if ok and type(val) == 'table' and val.holder == ARGV[1] and val.next == nil then
    return {'holder', cur}
  end
end
redis.call('HSET', KEYS[2], 'outdated:' .. ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], 'control')
return {'marked'}
"""

# KEYS: control. ARGV: node, the mark value seen, wake channel. Clears ``node``'s
# outdated mark only if it is still the one seen (a newer mark, from a link that broke
# again meanwhile, is kept).
CLEAR_OUTDATED = r"""
local field = 'outdated:' .. ARGV[1]
if redis.call('HGET', KEYS[1], field) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], field)
redis.call('PUBLISH', ARGV[3], 'control')
return 1
"""
