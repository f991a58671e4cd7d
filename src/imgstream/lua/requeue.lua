-- Give a dead-lettered job another chance: a fresh stream entry, attempts reset,
-- the error cleared, no expiry while it is outstanding; the dead letter is removed, and the
-- failure it was counted as is taken back (finish.lua counted it when it wrote the dead
-- letter), so the job counts once, under the outcome of its new run.
-- KEYS[1] dead-letter stream, KEYS[2] jobs stream, KEYS[3] job hash, KEYS[4] metrics hash
-- ARGV[1] dead-letter entry id, ARGV[2] the failed counter's field, ARGV[3] the job's
-- channel, ARGV[4] the queued status, ARGV[5] now (created_at when the job's hash has
-- expired meanwhile), ARGV[6] n, then n field/value pairs of the stream entry, then
-- field/value pairs of the queued job's hash (its 'entry' field is added here)
-- Returns the new entry id, or false when the dead letter is gone.
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return false
end
local entry_end = 6 + 2 * tonumber(ARGV[6])
local entry_id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 7, entry_end))
redis.call('HSET', KEYS[3], 'entry', entry_id, unpack(ARGV, entry_end + 1))
redis.call('HSETNX', KEYS[3], 'created_at', ARGV[5])
redis.call('HDEL', KEYS[3], 'error', 'error_code', 'finished_at', 'started_at', 'lease', 'worker')
redis.call('PERSIST', KEYS[3])
redis.call('XDEL', KEYS[1], ARGV[1])
if tonumber(redis.call('HGET', KEYS[4], ARGV[2]) or '0') > 0 then
  redis.call('HINCRBY', KEYS[4], ARGV[2], -1)
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return entry_id
