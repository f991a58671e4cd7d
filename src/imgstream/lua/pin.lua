-- Record a job as a user of a shared file (an original by its SHA-256, a cached result by
-- its content key), unless the janitor is deleting it. With a cache entry's key, only when
-- the entry exists, and the entry comes back: a cache hit and the pin of the result it
-- names happen in one step, so the janitor never deletes a result a new job was given.
-- Every key is under the deployment's base tag (never a job's partition).
-- KEYS[1] the name's users (sorted set), KEYS[2] the shared files' schedule (sorted set),
-- KEYS[3] the name's retiring mark, KEYS[4] (optional) the cache entry
-- ARGV[1] job id, ARGV[2] the name, ARGV[3] seconds until the janitor first looks at it
-- Returns {REFUSED 0} or {PINNED 1, field, value, ...} (the entry's fields) (lifecycle.Pinned).
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {0}
end
local entry = {}
if KEYS[4] then
  entry = redis.call('HGETALL', KEYS[4])
  if #entry == 0 then
    return {0}
  end
end
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZADD', KEYS[2], 'NX', now + tonumber(ARGV[3]), ARGV[2])
return {1, unpack(entry)}
