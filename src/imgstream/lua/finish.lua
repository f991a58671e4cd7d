-- Record a job's final outcome and acknowledge its entry, if and only if the caller
-- still holds the lease: a worker whose entry was taken over can never overwrite
-- the newer outcome, and a job ends exactly once.
-- KEYS[1] job hash, KEYS[2] jobs stream
-- ARGV[1] lease, ARGV[2] group, ARGV[3] entry id, ARGV[4] ttl seconds,
-- ARGV[5..] field/value pairs of the outcome, starting with 'status', <done|failed>
-- The new status is announced on the channel named like the job hash (for live status).
-- Returns 1 when recorded, 0 when the lease was lost or the job had already ended.
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then
  return 0
end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'done' or status == 'failed' then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('HDEL', KEYS[1], 'lease')
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
redis.call('PUBLISH', KEYS[1], ARGV[6])
return 1
