-- Take the webhooks that are due: each is pushed back by a lease, so that no other sender
-- takes it while this one tries, and a sender that dies leaves it due again afterwards.
-- KEYS[1] webhook schedule (job id -> due, ms of the server's clock)
-- ARGV[1] how many at most, ARGV[2] lease ms
-- Returns the job ids taken.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
end
return due
