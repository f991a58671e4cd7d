-- Accept a job: its hash and its stream entry appear together or not at all, and it is
-- counted as submitted in the same step.
-- KEYS[1] jobs stream, KEYS[2] job hash, KEYS[3] metrics hash
-- ARGV[1] max backlog (0: unlimited), ARGV[2] job id, ARGV[3] operations JSON,
-- ARGV[4] output format or '', ARGV[5] created_at, ARGV[6] client filename, ARGV[7] owner,
-- ARGV[8] the submitted counter's field, ARGV[9] n, then n field/value pairs for the entry
-- and the hash (output options), then field/value pairs for the hash only (the original's
-- description)
-- Returns {1, entry id} when accepted, {0, backlog} when the backlog is full,
-- {-1, ''} when the job id is taken.
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
local fields = {'job', ARGV[2], 'operations', ARGV[3]}
if ARGV[4] ~= '' then
  table.insert(fields, 'format')
  table.insert(fields, ARGV[4])
end
local shared_end = 9 + 2 * tonumber(ARGV[9])
for i = 10, shared_end, 2 do
  table.insert(fields, ARGV[i])
  table.insert(fields, ARGV[i + 1])
end
local entry_id = redis.call('XADD', KEYS[1], '*', unpack(fields))
redis.call('HSET', KEYS[2],
  'status', 'queued', 'operations', ARGV[3], 'format', ARGV[4],
  'created_at', ARGV[5], 'attempts', '0', 'filename', ARGV[6], 'owner', ARGV[7],
  'entry', entry_id)
for i = 10, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('HINCRBY', KEYS[3], ARGV[8], 1)
return {1, entry_id}
