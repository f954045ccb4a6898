-- One hit of a sliding-window rate counter, on Redis: the algorithm of the gateway's
-- `LocalCounters` (src/counters.rs), step for step, so that moving from local to shared
-- counters changes no policy. KEYS[1]: the counter (one key per key and window length).
-- ARGV: limit, window_ms, cost, now_ms ("" for Redis's clock), shift_ms (added to the
-- clock: a lease of `cost` units that a gateway may spend until then is counted there), and
-- the least part of `cost` to grant when not all of it fits ("0": all or nothing).
-- Stored as "newest last c0 c1 ... c20": the newest bucket, the latest time seen and the
-- ring of bucket counts; it expires once every bucket has left the window.
if redis.replicate_commands then
    -- Redis before 7 replicates a script that reads TIME only as its effects.
    redis.replicate_commands()
end
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now
if ARGV[4] ~= '' then
    now = tonumber(ARGV[4])
else
    local time = redis.call('TIME')
    now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
now = now + tonumber(ARGV[5] or '0')
local least = tonumber(ARGV[6] or '0')
local BUCKETS = 20
local SLOTS = BUCKETS + 1
local bucket = math.floor((window + BUCKETS - 1) / BUCKETS)

local counts = {}
local newest, last
local stored = redis.call('GET', KEYS[1])
if cost == 0 and not stored then
    -- A read of a counter nothing was counted on: all of the limit, and no key made for it.
    return { 1, string.format('%d', limit), '0', '0', '0' }
end
if stored then
    local fields = {}
    for field in string.gmatch(stored, '%S+') do
        fields[#fields + 1] = tonumber(field)
    end
    newest, last = fields[1], fields[2]
    for s = 0, SLOTS - 1 do
        counts[s] = fields[s + 3]
    end
else
    newest, last = math.floor(now / bucket), now
    for s = 0, SLOTS - 1 do
        counts[s] = 0
    end
end

if now < last then
    now = last
end
local current = math.floor(now / bucket)
if current > newest then
    if current - newest >= SLOTS then
        for s = 0, SLOTS - 1 do
            counts[s] = 0
        end
    else
        for i = newest + 1, current do
            counts[i % SLOTS] = 0
        end
    end
    newest = current
end
local start = now + 1 - window
if start < 0 then
    start = 0
end
local oldest = math.floor(start / bucket)
local function leaves(i)
    return (i + 1) * bucket + window - 1
end

local used = 0
for i = oldest, current do
    used = used + counts[i % SLOTS]
end
if least > 0 and used + cost > limit then
    -- A lease: what fits, if that is at least `least`; else judged (and retried) for `least`.
    if limit - used >= least then
        cost = limit - used
    else
        cost = least
    end
end
local allowed = used + cost <= limit
local retry = 0
if not allowed then
    if cost > limit then
        retry = window
    else
        retry = window
        local left = used
        for i = oldest, newest do
            left = left - counts[i % SLOTS]
            if left + cost <= limit then
                retry = math.max(leaves(i) - now, 1)
                break
            end
        end
    end
end
if allowed then
    counts[current % SLOTS] = counts[current % SLOTS] + cost
    used = used + cost
end
local reset = 0
for i = current, oldest, -1 do
    if counts[i % SLOTS] > 0 then
        reset = math.max(leaves(i) - now, 0)
        break
    end
end

local fields = { string.format('%d', newest), string.format('%d', now) }
for s = 0, SLOTS - 1 do
    fields[#fields + 1] = string.format('%d', counts[s])
end
local ttl = math.max(leaves(newest) - now, 1)
if ARGV[4] ~= '' then
    -- A given clock is not Redis's: keep the counter for a while of Redis's time instead.
    ttl = ttl + 600000
end
redis.call('SET', KEYS[1], table.concat(fields, ' '), 'PX', string.format('%d', ttl))
local remaining = limit - used
if remaining < 0 then
    remaining = 0
end
return { allowed and 1 or 0, string.format('%d', remaining), string.format('%d', reset), string.format('%d', retry),
    string.format('%d', allowed and cost or 0) }
