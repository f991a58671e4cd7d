-- Accept a job: its hash and its stream entry appear together or not at all, and it is
-- counted as submitted in the same step.
-- KEYS[1] jobs stream, KEYS[2] job hash, KEYS[3] metrics hash
-- ARGV[1] max backlog (0: unlimited), ARGV[2] the submitted counter's field, ARGV[3] n,
-- then n field/value pairs of the stream entry, then field/value pairs of the job hash
-- (its 'entry' field, the new entry's id, is added here)
-- Returns {ACCEPTED 1, entry id}, {BACKLOG_FULL 0, backlog}, or {JOB_EXISTS -1, ''}
-- (jobs.Enqueued).
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
local entry_end = 3 + 2 * tonumber(ARGV[3])
local entry_id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4, entry_end))
redis.call('HSET', KEYS[2], 'entry', entry_id, unpack(ARGV, entry_end + 1))
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
return {1, entry_id}
