-- The janitor's step for a shared file whose users it has checked: forget those that are
-- gone (their jobs expired, or were never made), and when no user is left, mark the file
-- as being deleted (pins are refused while the mark lives), unschedule it and drop its
-- cache entry, all at once; the janitor then deletes the file and clears the mark.
-- KEYS[1] the name's users, KEYS[2] the shared files' schedule, KEYS[3] the retiring mark,
-- KEYS[4] the cache entry of the name
-- ARGV[1] the name, ARGV[2] the mark's lease (ms), ARGV[3..] the users that are gone
-- Returns 1 when retired (delete the file now), 0 while it has users.
if #ARGV > 2 then
  redis.call('ZREM', KEYS[1], unpack(ARGV, 3))
end
if redis.call('ZCARD', KEYS[1]) > 0 then
  return 0
end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[4])
return 1
