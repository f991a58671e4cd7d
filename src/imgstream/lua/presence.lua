-- A worker says it is alive: its consumer name scored with the server's clock (ms), so
-- workers on machines with skewed clocks are judged alike. Members not heard from for
-- ARGV[2] ms are forgotten.
-- KEYS[1] presence sorted set
-- ARGV[1] consumer name, ARGV[2] forget after (ms)
-- Returns the server time in ms.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return now
