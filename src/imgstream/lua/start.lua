-- A worker takes up a delivered entry: mark the job processing and give it a fresh lease.
-- The lease fences every later write: only its holder may finish the job.
-- Announces the change on the job's channel (for live status).
-- KEYS[1] job hash, KEYS[2] metrics hash
-- ARGV[1] lease, ARGV[2] now, ARGV[3] consumer name, ARGV[4] max attempts,
-- ARGV[5] the submitted counter's field, ARGV[6] the job's channel,
-- ARGV[7] the processing status, ARGV[8] and ARGV[9] the final statuses,
-- ARGV[10..] field/value pairs of the hash of a queued job (written only when it is missing)
-- Returns the attempt number; ALREADY_ENDED (-1) when the job has already ended (a
-- duplicate delivery); EXHAUSTED (-2) when it has been started max-attempts times without
-- ending (a poison entry: each attempt killed its worker or ran out of time), which the
-- caller must bury (lifecycle.StartRefused).
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- A producer that only added the stream entry: the job becomes visible (and counted) now.
  redis.call('HSET', KEYS[1], unpack(ARGV, 10))
  redis.call('HINCRBY', KEYS[2], ARGV[5], 1)
end
local job = redis.call('HMGET', KEYS[1], 'status', 'attempts')
if job[1] == ARGV[8] or job[1] == ARGV[9] then
  return -1
end
if tonumber(job[2] or '0') >= tonumber(ARGV[4]) then
  return -2
end
redis.call('HSET', KEYS[1], 'status', ARGV[7], 'started_at', ARGV[2],
  'lease', ARGV[1], 'worker', ARGV[3])
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('PUBLISH', ARGV[6], ARGV[7])
return attempt
