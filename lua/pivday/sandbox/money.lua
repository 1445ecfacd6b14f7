--- pivday.sandbox.money: integer cents, and their JSON and text forms.
--
-- The sandbox never does arithmetic on floats: prices, charges, refunds and
-- balances are integer cents, converted only when an answer is written.
local M = {}

local tointeger = math.tointeger

--- Cents as the API's JSON number (5.00 -> 5.0, 0.25 -> 0.25).
function M.json(cents)
  if cents == nil then return nil end
  return cents / 100
end

--- Cents as "$5.00" (the INSUFFICIENT_BALANCE message form).
function M.usd(cents)
  local sign = cents < 0 and "-" or ""
  cents = math.abs(cents)
  return ("%s$%d.%02d"):format(sign, cents // 100, cents % 100)
end

--- cents * percent / 100, rounded half up (policy.rounding).
function M.percent(cents, percent)
  return (cents * percent + 50) // 100
end

--- Dollars (a JSON number such as 12.5) to cents, or nil when it is not a
-- whole number of cents. Used by the control API, which takes balances.
function M.from_dollars(x)
  if type(x) ~= "number" then return nil end
  local c = x * 100
  local r = math.floor(c + 0.5)
  if math.abs(c - r) > 1e-6 then return nil end
  return tointeger(r)
end

return M
