-- A worker takes up a delivered entry: mark the job processing and give it a fresh lease.
-- The lease fences every later write: only its holder may finish the job.
-- Announces the change on the channel named like the job hash (for live status).
-- KEYS[1] job hash, KEYS[2] metrics hash
-- ARGV[1] lease, ARGV[2] now, ARGV[3] operations JSON, ARGV[4] format,
-- ARGV[5] created_at (from the entry id), ARGV[6] entry id, ARGV[7] consumer name,
-- ARGV[8] max attempts, ARGV[9] the submitted counter's field, ARGV[10..] field/value
-- pairs of the entry's other output options
-- Returns the attempt number; -1 when the job has already ended (a duplicate delivery);
-- -2 when it has been started max-attempts times without ending (a poison entry: each
-- attempt killed its worker or ran out of time), which the caller must bury.
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- A producer that only added the stream entry: the job becomes visible (and counted) now.
  redis.call('HSET', KEYS[1],
    'status', 'queued', 'operations', ARGV[3], 'format', ARGV[4],
    'created_at', ARGV[5], 'attempts', '0', 'entry', ARGV[6])
  for i = 10, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  redis.call('HINCRBY', KEYS[2], ARGV[9], 1)
end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'done' or status == 'failed' then
  return -1
end
if tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') >= tonumber(ARGV[8]) then
  return -2
end
redis.call('HSET', KEYS[1], 'status', 'processing', 'started_at', ARGV[2],
  'lease', ARGV[1], 'worker', ARGV[7])
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('PUBLISH', KEYS[1], 'processing')
return attempt
