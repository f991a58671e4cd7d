-- Record a job's final outcome and acknowledge its entry, if and only if the caller
-- still holds the lease: a worker whose entry was taken over can never overwrite
-- the newer outcome, and a job ends exactly once. With a dead-letter reason, the job
-- is also copied to the dead-letter stream, for an operator to inspect and retry.
-- An empty lease skips the lease check: used to bury a poison entry whose last
-- holder died (the caller has just claimed the entry, so no one else holds it).
-- The job's expiry time (server clock + ttl) is added to the expiry set, from which the
-- janitor deletes the job's files once its hash has expired.
-- The outcome is counted (the counter's field is named by the caller) in the same step,
-- so a job counts once, whatever the retries, take-overs and duplicate deliveries.
-- KEYS[1] job hash, KEYS[2] jobs stream, KEYS[3] dead-letter stream, KEYS[4] expiry set,
-- KEYS[5] metrics hash
-- ARGV[1] lease, ARGV[2] group, ARGV[3] entry id, ARGV[4] ttl seconds,
-- ARGV[5] dead-letter reason ('' for none), ARGV[6] now, ARGV[7] the outcome counter's field,
-- ARGV[8..] field/value pairs of the outcome, starting with 'status', <done|failed>
-- The new status is announced on the channel named like the job hash (for live status).
-- Returns 1 when recorded, 0 when the lease was lost or the job had already ended.
local current = redis.call('HMGET', KEYS[1], 'lease', 'status')
if ARGV[1] ~= '' and current[1] ~= ARGV[1] then
  return 0
end
if current[2] == 'done' or current[2] == 'failed' then
  redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
  redis.call('XDEL', KEYS[2], ARGV[3])
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('HINCRBY', KEYS[5], ARGV[7], 1)
redis.call('HDEL', KEYS[1], 'lease')
redis.call('EXPIRE', KEYS[1], ARGV[4])
local id = string.match(KEYS[1], ':job:(%x+)$')
local clock = redis.call('TIME')
redis.call('ZADD', KEYS[4], tonumber(clock[1]) + tonumber(ARGV[4]), id)
if ARGV[5] ~= '' then
  local job = redis.call('HMGET', KEYS[1], 'operations', 'format', 'attempts')
  redis.call('XADD', KEYS[3], '*',
    'job', id, 'operations', job[1] or '', 'format', job[2] or '',
    'reason', ARGV[5], 'deliveries', job[3] or '0', 'entry', ARGV[3], 'failed_at', ARGV[6])
end
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
redis.call('PUBLISH', KEYS[1], ARGV[9])
return 1
