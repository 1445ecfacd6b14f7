--- pivday.time: the API's ISO 8601 timestamps to epoch seconds and back.
--
-- The API writes UTC with a "Z" ("2026-05-22T12:34:56Z"); parse also takes
-- numeric offsets and fractional seconds so that values from other sources
-- (webhook relays, user input) work too. Pure arithmetic, no os.time: the
-- result never depends on the local time zone.
local M = {}

local floor, tointeger = math.floor, math.tointeger

-- Days from 1970-01-01 to the given civil date (proleptic Gregorian).
-- Counting in 400-year eras starting on March 1 puts the leap day last.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = (153 * mp + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

-- Inverse of days_from_civil.
local function civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
  local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
  local mp = (5 * doy + 2) // 153
  local d = doy - (153 * mp + 2) // 5 + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days_in_month(y, m)
  if m == 2 then
    local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
    return leap and 29 or 28
  end
  return (m == 4 or m == 6 or m == 9 or m == 11) and 30 or 31
end

--- Parses an ISO 8601 / RFC 3339 date-time into epoch seconds (UTC).
-- Accepts "YYYY-MM-DDTHH:MM:SS" with optional fractional seconds and a
-- zone of "Z" or "+HH:MM" / "-HHMM" ("T" may be a space). A zone is required:
-- a bare local time is ambiguous. Returns an integer when there is no
-- fraction, else a float; or nil and a message for malformed input.
function M.parse(s)
  if type(s) ~= "string" then
    error("bad argument #1 to 'parse' (string expected, got " .. type(s) .. ")", 2)
  end
  local y, mo, d, h, mi, sec, frac, zone =
    s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not y then
    return nil, "not an ISO 8601 date-time: '" .. s .. "'"
  end
  y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
  if frac == "." then return nil, "empty fraction in '" .. s .. "'" end
  local offset
  if zone == "Z" or zone == "z" then
    offset = 0
  else
    local sign, oh, om = zone:match("^([+-])(%d%d):?(%d%d)$")
    if not sign then
      return nil, "missing or bad time zone in '" .. s .. "' (want Z or +HH:MM)"
    end
    oh, om = tonumber(oh), tonumber(om)
    if oh > 23 or om > 59 then return nil, "bad time zone offset in '" .. s .. "'" end
    offset = (oh * 3600 + om * 60) * (sign == "-" and -1 or 1)
  end
  if mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo)
    or h > 23 or mi > 59 or sec > 60 then -- 60: a leap second
    return nil, "date-time out of range: '" .. s .. "'"
  end
  local t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset
  if frac ~= "" then
    local f = tonumber("0" .. frac)
    if f ~= 0 then return t + f end
  end
  return t
end

--- Formats epoch seconds as the API writes them: "2026-05-22T12:34:56Z".
-- A fractional part is dropped (rounded down), as the API uses whole seconds.
function M.format(epoch)
  if type(epoch) ~= "number" or epoch ~= epoch or epoch == math.huge or epoch == -math.huge then
    error("bad argument #1 to 'format' (finite number expected, got " .. tostring(epoch) .. ")", 2)
  end
  local t = tointeger(floor(epoch))
  local days, rem = t // 86400, t % 86400
  local y, m, d = civil_from_days(days)
  return ("%04d-%02d-%02dT%02d:%02d:%02dZ"):format(y, m, d, rem // 3600, rem % 3600 // 60, rem % 60)
end

return M
