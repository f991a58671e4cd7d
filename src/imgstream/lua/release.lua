-- Release a lock only if it is still ours: a holder whose lease ran out (and whose lock
-- another process has taken since) must not free the newer holder's lock.
-- KEYS[1] lock key
-- ARGV[1] the token this holder set
-- Returns 1 when released, 0 when the lock was no longer ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
