-- Accept a job that is done at once, its result taken from the result cache: its hash
-- appears complete (status done, result fields), with the result TTL, noted in the expiry
-- set, counted as submitted, done and a cache hit, its webhook scheduled and its status
-- announced, in one step.
-- With an idempotency key, as in enqueue.lua: a key that names a job already creates
-- nothing, and the key's record is written with the job.
-- KEYS[1] job hash, KEYS[2] metrics hash, KEYS[3] expiry set, KEYS[4] webhook schedule,
-- KEYS[5] (optional) the idempotency key's record
-- ARGV[1] ttl seconds, ARGV[2] the submitted counter's field, ARGV[3] the done counter's
-- field, ARGV[4] the cache hits counter's field, ARGV[5] idempotency ttl seconds,
-- ARGV[6] job id, ARGV[7] request fingerprint, ARGV[8] the job's channel, ARGV[9] the done
-- status (announced on the channel), then field/value pairs of the job hash
-- Returns {ACCEPTED 1, ''}, {JOB_EXISTS -1, ''} or {REPLAYED 2, job id, fingerprint}
-- (lifecycle.Enqueued).
if KEYS[5] then
  local prior = redis.call('HMGET', KEYS[5], 'job', 'request')
  if prior[1] then
    return {2, prior[1], prior[2] or ''}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {-1, ''}
end
redis.call('HSET', KEYS[1], unpack(ARGV, 10))
redis.call('EXPIRE', KEYS[1], ARGV[1])
local id = ARGV[6]
local clock = redis.call('TIME')
redis.call('ZADD', KEYS[3], tonumber(clock[1]) + tonumber(ARGV[1]), id)
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
if redis.call('HEXISTS', KEYS[1], 'callback_url') == 1 then
  redis.call('ZADD', KEYS[4], tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000), id)
end
if KEYS[5] then
  redis.call('HSET', KEYS[5], 'job', id, 'request', ARGV[7])
  redis.call('EXPIRE', KEYS[5], ARGV[5])
end
redis.call('PUBLISH', ARGV[8], ARGV[9])
return {1, ''}
