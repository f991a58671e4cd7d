-- Accept a job: its hash and its stream entry appear together or not at all, and it is
-- counted as submitted in the same step. With an idempotency key, the key's record is
-- written in the same step, and a key that names a job already creates nothing.
-- KEYS[1] jobs stream, KEYS[2] job hash, KEYS[3] metrics hash,
-- KEYS[4] (optional) the idempotency key's record
-- ARGV[1] max backlog (0: unlimited), ARGV[2] the submitted counter's field,
-- ARGV[3] idempotency ttl seconds, ARGV[4] job id, ARGV[5] request fingerprint, ARGV[6] n,
-- then n field/value pairs of the stream entry, then field/value pairs of the job hash
-- (its 'entry' field, the new entry's id, is added here)
-- Returns {ACCEPTED 1, entry id}, {BACKLOG_FULL 0, backlog}, {JOB_EXISTS -1, ''} or
-- {REPLAYED 2, job id, fingerprint} (lifecycle.Enqueued).
if KEYS[4] then
  local prior = redis.call('HMGET', KEYS[4], 'job', 'request')
  if prior[1] then
    return {2, prior[1], prior[2] or ''}
  end
end
local max_backlog = tonumber(ARGV[1])
if max_backlog > 0 then
  local backlog = redis.call('XLEN', KEYS[1])
  if backlog >= max_backlog then
    return {0, backlog}
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {-1, ''}
end
local entry_end = 6 + 2 * tonumber(ARGV[6])
local entry_id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 7, entry_end))
redis.call('HSET', KEYS[2], 'entry', entry_id, unpack(ARGV, entry_end + 1))
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
if KEYS[4] then
  redis.call('HSET', KEYS[4], 'job', ARGV[4], 'request', ARGV[5])
  redis.call('EXPIRE', KEYS[4], ARGV[3])
end
return {1, entry_id}
