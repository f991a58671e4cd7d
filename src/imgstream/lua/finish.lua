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
-- A job with a 'callback_url' is added to the webhook schedule, due now, in the same step,
-- so its webhook is sent at least once.
-- KEYS[1] job hash, KEYS[2] jobs stream, KEYS[3] dead-letter stream, KEYS[4] expiry set,
-- KEYS[5] metrics hash, KEYS[6] webhook schedule
-- ARGV[1] lease, ARGV[2] group, ARGV[3] entry id, ARGV[4] ttl seconds,
-- ARGV[5] dead-letter reason ('' for none), ARGV[6] now, ARGV[7] the outcome counter's field,
-- ARGV[8] job id, ARGV[9] the job's channel, ARGV[10] and ARGV[11] the final statuses,
-- ARGV[12] the new status (announced on the channel, for live status),
-- ARGV[13..] field/value pairs of the outcome
-- Returns RECORDED (1), or LEASE_LOST (0) when the lease was lost or the job had already
-- ended (lifecycle.Recorded).
local current = redis.call('HMGET', KEYS[1], 'lease', 'status', 'callback_url')
if ARGV[1] ~= '' and current[1] ~= ARGV[1] then
  return 0
end
if current[2] == ARGV[10] or current[2] == ARGV[11] then
  redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
  redis.call('XDEL', KEYS[2], ARGV[3])
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 13))
redis.call('HINCRBY', KEYS[5], ARGV[7], 1)
redis.call('HDEL', KEYS[1], 'lease')
redis.call('EXPIRE', KEYS[1], ARGV[4])
local id = ARGV[8]
local clock = redis.call('TIME')
redis.call('ZADD', KEYS[4], tonumber(clock[1]) + tonumber(ARGV[4]), id)
if current[3] then
  redis.call('ZADD', KEYS[6], tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000), id)
end
if ARGV[5] ~= '' then
  local job = redis.call('HMGET', KEYS[1], 'operations', 'format', 'attempts')
  redis.call('XADD', KEYS[3], '*',
    'job', id, 'operations', job[1] or '', 'format', job[2] or '',
    'reason', ARGV[5], 'deliveries', job[3] or '0', 'entry', ARGV[3], 'failed_at', ARGV[6])
end
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[9], ARGV[12])
return 1
