-- Give a dead-lettered job another chance: a fresh stream entry, attempts reset,
-- the error cleared, no expiry while it is outstanding; the dead letter is removed, and the
-- failure it was counted as is taken back (finish.lua counted it when it wrote the dead
-- letter), so the job counts once, under the outcome of its new run.
-- KEYS[1] dead-letter stream, KEYS[2] jobs stream, KEYS[3] job hash, KEYS[4] metrics hash
-- ARGV[1] dead-letter entry id, ARGV[2] job id, ARGV[3] operations, ARGV[4] format,
-- ARGV[5] now (created_at when the job's hash has expired meanwhile),
-- ARGV[6] the failed counter's field
-- Returns the new entry id, or false when the dead letter is gone.
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return false
end
local fields = {'job', ARGV[2], 'operations', ARGV[3]}
if ARGV[4] ~= '' then
  table.insert(fields, 'format')
  table.insert(fields, ARGV[4])
end
local entry_id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('HSET', KEYS[3], 'status', 'queued', 'operations', ARGV[3], 'format', ARGV[4],
  'attempts', '0', 'entry', entry_id)
redis.call('HSETNX', KEYS[3], 'created_at', ARGV[5])
redis.call('HDEL', KEYS[3], 'error', 'error_code', 'finished_at', 'started_at', 'lease', 'worker')
redis.call('PERSIST', KEYS[3])
redis.call('XDEL', KEYS[1], ARGV[1])
if tonumber(redis.call('HGET', KEYS[4], ARGV[6]) or '0') > 0 then
  redis.call('HINCRBY', KEYS[4], ARGV[6], -1)
end
redis.call('PUBLISH', KEYS[3], 'queued')
return entry_id
