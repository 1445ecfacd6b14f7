--- pivday.webhooks.dedupe: recognising a retried delivery.
--
-- piv.day events carry no id (QUIRKS 27), and the sender retries a delivery
-- it thinks failed (no 2xx within 5 s, or a connection cut after we had
-- answered). A retry repeats type, timestamp and data, so those three are
-- the identity: `key` digests them in canonical form (data with sorted
-- keys and numbers by value, so a re-serialised body with another key order
-- still matches) and a `Window` remembers keys for `window` seconds of
-- wall-clock time. Wall clock, not monotonic: the journal persists arrival
-- times across restarts and the window is rebuilt from them.
--
-- The price: two genuinely separate events with the same type, timestamp
-- (whole seconds) and data inside the window are merged into one.
local json = require "pivday.json"
local core = require "pivday.core"

local M = {}

local type, pairs, sort, concat, format = type, pairs, table.sort, table.concat, string.format
local mtype, encode, null = math.type, json.encode, json.null

-- Appends the canonical form of v to out (n items so far); returns the new
-- n.
local function canon(v, out, n)
  local tv = type(v)
  if tv == "string" then
    n = n + 1
    out[n] = encode(v)
  elseif tv == "number" then
    n = n + 1
    out[n] = mtype(v) == "integer" and format("%d", v) or format("%.17g", v)
  elseif tv == "boolean" then
    n = n + 1
    out[n] = v and "true" or "false"
  elseif tv == "table" then
    if v[1] ~= nil or json.is_array(v) then
      n = n + 1
      out[n] = "["
      for i = 1, #v do
        if i > 1 then n = n + 1 out[n] = "," end
        n = canon(v[i], out, n)
      end
      n = n + 1
      out[n] = "]"
    else
      local keys, k = {}, 0
      for key in pairs(v) do
        k = k + 1
        keys[k] = tostring(key)
      end
      sort(keys)
      n = n + 1
      out[n] = "{"
      for i = 1, k do
        local key = keys[i]
        if i > 1 then n = n + 1 out[n] = "," end
        out[n + 1] = encode(key)
        out[n + 2] = ":"
        n = canon(v[key], out, n + 2)
      end
      n = n + 1
      out[n] = "}"
    end
  elseif v == null or v == nil then
    n = n + 1
    out[n] = "null"
  else
    n = n + 1
    out[n] = tostring(v)
  end
  return n
end

--- The canonical JSON text of a decoded value: object keys sorted, numbers
-- written so that 7.5 and 7.50 agree, no whitespace.
function M.canonical(v)
  local out = {}
  local n = canon(v, out, 0)
  return concat(out, "", 1, n)
end

--- The identity of a delivery: a 16-byte digest of type, timestamp and
-- data in canonical form (the structure of `canonical`: keys sorted,
-- numbers by value, every item tagged with its type and length). Done in C
-- (core.canon_key): it runs on every delivery, and the canonical text built
-- here in Lua cost a third of an event; a digest also keeps the window's
-- keys 16 bytes instead of a copy of each body (see bindings/canon.c for
-- the hash and the odds of two events colliding: ~2^-100).
M.key = core.canon_key

--- The same key from an event's JSON text (nil if it is not JSON): what
-- the listener's C path takes for every delivery, so the journal's records
-- are keyed the same way when it is read back.
M.text_key = core.event_key

--- A window of `seconds` (wall clock), holding at most `cap` keys (100,000
-- by default, at most 2^30; the oldest go first when a flood exceeds it,
-- so memory stays bounded: ~5 MB when full at the default):
-- w:seen_or_add(key, now) -> boolean, w:seen(key, now), w:add(key, now),
-- w:forget(key) (a delivery that was not acknowledged after all: its retry
-- must count as new), w:count(). Keys are `key`'s 16 bytes, times epoch
-- seconds. In C (bindings/dedupe.c): the listener's request path asks it
-- on every delivery without calling Lua.
M.window = core.dedupe_window

return M
