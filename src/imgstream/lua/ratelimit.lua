-- Take tokens from a client's bucket: refilled continuously at a fixed rate, up to the burst.
-- The clock is the server's (TIME), so every API instance sees one bucket, whatever its own clock.
-- KEYS[1] the bucket (a hash: tokens, at)
-- ARGV[1] tokens per second, ARGV[2] burst (bucket size), ARGV[3] tokens to take
-- Returns {1, 0} when taken, {0, ms} when refused: ms until enough tokens are back.
-- The key expires once the bucket would be full again: an idle client costs nothing.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local taken = 0
local wait_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  taken = 1
else
  wait_ms = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return {taken, wait_ms}
