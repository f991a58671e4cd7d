-- Keep this consumer's in-flight entries fresh, so that no other worker takes them over
-- while this one is alive, however long a job runs. Only entries this consumer still
-- owns are touched: one that was taken over is never taken back.
-- KEYS[1] jobs stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3..] entry ids
-- Returns the entry ids this consumer still holds.
local held = {}
for index = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[index], ARGV[index], 1)
  if pending[1] and pending[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[index], 'JUSTID')
    table.insert(held, ARGV[index])
  end
end
return held
