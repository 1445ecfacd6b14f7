--- pivday.flows.common: what every flow shares — progress lines, money in
-- cents, charges measured or reported, the result and error shapes, waiting
-- on a webhook or polling, and the run token.
local pivday = require "pivday"
local Error = require "pivday.error"

local M = {}

--- Integer cents of an API amount (money is a JSON number with 2 decimals).
function M.cents(x)
  if type(x) ~= "number" then return 0 end
  return math.floor(x * 100 + 0.5)
end

--- An API amount from cents (4.5 for 450, 4 for 400).
function M.amount(c)
  local v = c / 100
  return math.tointeger(v) or v
end

--- The progress reporter of a flow: opts.progress (a function taking one
-- line), or a line on stderr with the elapsed time; false silences it.
function M.progress(opts, name)
  local started = pivday.now()
  local sink = opts.progress
  if sink == false then return function() end end
  return function(fmt, ...)
    local line = (fmt):format(...)
    if type(sink) == "function" then
      sink(line)
    else
      io.stderr:write(("[%s %5.1fs] %s\n"):format(name, pivday.now() - started, line))
    end
  end
end

--- The client of a flow: opts.api, else a new pivday.client{}.
function M.api(opts)
  return opts.api or pivday.client{}
end

--- An error of a flow, carrying the money it moved.
function M.fail(err, money, extra)
  if not Error.is(err) then
    err = Error.new{ kind = "local", code = "FLOW_ERROR", message = tostring(err) }
  end
  err.charged = M.amount(money.charged)
  err.refunded = M.amount(money.refunded)
  for k, v in pairs(extra or {}) do err[k] = v end
  return nil, err
end

--- A misuse of a flow's options: raised, naming the field.
function M.need(opts, field, kind, flow)
  local v = opts[field]
  if type(v) ~= kind then
    error(("bad argument to flows.%s (field '%s' must be a %s, got %s)"):format(
      flow, field, kind, type(v)), 3)
  end
  return v
end

local function amount_in(res)
  if type(res) ~= "table" then return nil end
  for _, k in ipairs { "cost", "total_cost", "total_charged", "price_total", "price" } do
    if type(res[k]) == "number" then return res[k] end
  end
  for _, sub in ipairs { "order", "domain", "white" } do
    local t = res[sub]
    if type(t) == "table" then
      for _, k in ipairs { "cost", "total_cost", "price_total", "price" } do
        if type(t[k]) == "number" then return t[k] end
      end
    end
  end
end

--- Runs a charging call and returns (result, charged cents) or (nil, err).
-- The amount is the one the API reports when it does (purchase `cost`,
-- restore `total_charged`, ...); otherwise (verify, domains, whites) it is
-- the balance difference around the call, which assumes no other charge on
-- the account happens meanwhile (the README says so).
function M.charge(api, fn, ...)
  local before
  local acct = api.account.get()
  if acct then before = M.cents(acct.balance) end
  local res, err = fn(...)
  if res == nil then return nil, err end
  local reported = amount_in(res)
  if reported then return res, M.cents(reported) end
  local after = api.account.get()
  if before and after then return res, math.max(0, before - M.cents(after.balance)) end
  return res, 0
end

--- A token identifying one run of a flow, carried in custom_name so that
-- after an unknown outcome the flow can find what it bought.
function M.run_token()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(6) or tostring(os.time() ^ 2)
  if f then f:close() end
  return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end)):sub(1, 12)
end

--- Waits for one of `types` matching `match`: through the listener when
-- there is one (the waiter was created before the triggering call), else
-- by polling `poll()` every `interval` seconds until it returns a value.
-- Returns the event/value, or nil and a TIMEOUT error.
function M.await_outcome(waiter, poll, timeout, interval, what)
  if waiter then return waiter:wait(timeout) end
  local deadline = pivday.now() + timeout
  interval = interval or 2
  while true do
    local v, err = poll()
    if v ~= nil then return v end
    if err then return nil, err end
    local left = deadline - pivday.now()
    if left <= 0 then
      return nil, Error.new{ kind = "timeout", code = "TIMEOUT",
        message = ("%s did not finish within %g s"):format(what, timeout) }
    end
    pivday.sleep(math.min(interval, left))
  end
end

return M
