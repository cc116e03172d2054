//! The Lua scripts that make each team's operations atomic in Redis: one
//! round trip per publish (de-duplicate an alert, increment the seq,
//! append with `MAXLEN ~`, keep the firing set), one per snapshot.
//!
//! A publish's `XADD` is also its notification: every process blocks in
//! `XREAD` on the team's streams and reads the frame from there, in seq
//! order (no separate PUBLISH, so no window in which a notification can
//! be lost while the frame is stored).

/// KEYS: epoch, logs:seq, logs, alerts:seq, alerts, firing, firing:order,
/// firing:state, resolved.
/// ARGV: 1 stream (`logs`|`alerts`), 2 a new epoch (used when the team
/// has none), 3 history length, 4 frame head, 5 frame tail, 6 ts (µs),
/// 7 level, 8 source, 9 fingerprint, 10 firing content (`` = resolved),
/// 11 max firing, 12 resolved fingerprints remembered.
/// Returns {seq, epoch}; seq 0: an alert that repeats its state.
pub const PUBLISH: &str = r#"
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9])
  redis.call('SET', KEYS[1], epoch)
end
local alerts = ARGV[1] == 'alerts'
local kseq, kstream = KEYS[2], KEYS[3]
if alerts then kseq, kstream = KEYS[4], KEYS[5] end
local fp, state = ARGV[9], ARGV[10]
if alerts then
  if state ~= '' then
    if redis.call('HGET', KEYS[8], fp) == state then return {0, epoch} end
  elseif redis.call('HEXISTS', KEYS[6], fp) == 0 and redis.call('ZSCORE', KEYS[9], fp) then
    return {0, epoch}
  end
end
local seq = redis.call('INCR', kseq)
local s = string.format('%d', seq)
local frame = ARGV[4] .. epoch .. '","seq":' .. s .. ARGV[5]
local t = redis.call('TIME')
local at = t[1] .. string.format('%06d', tonumber(t[2]))
redis.call('XADD', kstream, 'MAXLEN', '~', ARGV[3], s .. '-0',
  'f', frame, 'l', ARGV[7], 's', ARGV[8], 't', ARGV[6], 'a', at, 'e', epoch)
if alerts then
  if state ~= '' then
    redis.call('HSET', KEYS[6], fp, frame)
    redis.call('HSET', KEYS[8], fp, state)
    redis.call('ZADD', KEYS[7], seq, fp)
    redis.call('ZREM', KEYS[9], fp)
    local over = redis.call('ZCARD', KEYS[7]) - tonumber(ARGV[11])
    if over > 0 then
      local old = redis.call('ZRANGE', KEYS[7], 0, over - 1)
      for _, f in ipairs(old) do
        redis.call('HDEL', KEYS[6], f)
        redis.call('HDEL', KEYS[8], f)
      end
      redis.call('ZREMRANGEBYRANK', KEYS[7], 0, over - 1)
    end
  else
    redis.call('HDEL', KEYS[6], fp)
    redis.call('HDEL', KEYS[8], fp)
    redis.call('ZREM', KEYS[7], fp)
    redis.call('ZADD', KEYS[9], seq, fp)
    local over = redis.call('ZCARD', KEYS[9]) - tonumber(ARGV[12])
    if over > 0 then redis.call('ZREMRANGEBYRANK', KEYS[9], 0, over - 1) end
  end
end
return {seq, epoch}
"#;

/// KEYS: as [`PUBLISH`]. ARGV: 1 a new epoch (used when the team has
/// none), 2 log frames wanted, 3 alert frames wanted.
/// Returns {epoch, logs head, alerts head, logs (newest first), alerts
/// (newest first), firing frames (oldest first)}, all as of one moment.
pub const SNAPSHOT: &str = r#"
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9])
  redis.call('SET', KEYS[1], epoch)
end
local lh = tonumber(redis.call('GET', KEYS[2]) or '0')
local ah = tonumber(redis.call('GET', KEYS[4]) or '0')
local logs = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', ARGV[2])
local alerts = redis.call('XREVRANGE', KEYS[5], '+', '-', 'COUNT', ARGV[3])
local firing = {}
for _, fp in ipairs(redis.call('ZRANGE', KEYS[7], 0, -1)) do
  local f = redis.call('HGET', KEYS[6], fp)
  if f then firing[#firing + 1] = f end
end
return {epoch, lh, ah, logs, alerts, firing}
"#;

/// KEYS: as [`PUBLISH`]. ARGV: 1 the epoch whose streams Redis no
/// longer holds as acknowledged (it went back in time), 2 a new epoch.
/// Starts the team's streams over in the new epoch, unless another
/// process did so already (the firing set stays: it is what Redis has).
/// Returns the team's epoch.
pub const ROTATE: &str = r#"
local epoch = redis.call('GET', KEYS[1])
if epoch == ARGV[1] then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  redis.call('SET', KEYS[1], ARGV[2])
  epoch = ARGV[2]
end
return epoch
"#;

/// KEYS: hosts. ARGV: 1 now (unix ms), 2 age (ms) beyond which a host is
/// dropped. Returns the rest as `{host, "<seen ms> <snapshot>", …}`.
pub const HOSTS: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
local now, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  local seen = tonumber(string.match(v, '^(%d+) '))
  if seen == nil or now - seen > max then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = all[i]
    out[#out + 1] = v
  end
end
return out
"#;
