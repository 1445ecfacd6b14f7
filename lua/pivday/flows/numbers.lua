--- pivday.flows.numbers: flows around virtual numbers — buy and verify,
-- wait for an SMS code, restore expired numbers.
local Error = require "pivday.error"
local json = require "pivday.json"
local common = require "pivday.flows.common"
local state_mod = require "pivday.flows.state"

local M = {}

local DEFAULT_CODE_PATTERN = "(%d%d%d%d%d?%d?%d?%d?)"

local function extract_code(text, pattern)
  if type(text) ~= "string" then return nil end
  return text:match(pattern or DEFAULT_CODE_PATTERN)
end

-- Finds the number a purchase with this run token bought, if any.
local function find_by_token(api, token)
  for n in api.numbers.each{} do
    if type(n.custom_name) == "string" and n.custom_name:find(token, 1, true) then return n end
  end
end

-- Buys one number, or resumes the one a previous run bought. Returns the
-- number and the cents charged by this run.
local function buy(api, opts, st, say, money)
  local bought = st:get("purchased")
  if bought then
    say("resuming: number %s was bought by an earlier run", bought.piv_num_id)
    return bought
  end
  local token = st:get("token")
  if token then
    -- An earlier run may have bought without recording it: look first.
    local n = find_by_token(api, token)
    if n then
      say("resuming: found number %s bought by an earlier run", n.piv_num_id)
      local rec = { piv_num_id = n.piv_num_id, phone_number = n.phone_number,
        country_code = n.country_code, expires_at = n.expires_at, cost = 0 }
      st:set("purchased", rec)
      return rec
    end
  else
    token = common.run_token()
    st:set("token", token)
  end
  local name = (opts.custom_name and (opts.custom_name .. " ") or "pivday ") .. "run:" .. token
  say("buying a number in %s for %d month(s)", opts.country_code, opts.duration_months or 1)
  local res, err = api.numbers.purchase{ country_code = opts.country_code,
    duration_months = opts.duration_months or 1, auto_renew = opts.auto_renew == true,
    custom_name = name }
  if not res and err.outcome_unknown then
    say("purchase outcome unknown (%s): looking for run:%s before anything else", err.code, token)
    local n = find_by_token(api, token)
    if not n then
      err.message = err.message .. "; no number carries run:" .. token
        .. " yet: re-run with the same state file later, it looks again before buying"
      return nil, err
    end
    res = { cost = nil, numbers = { n } }
  elseif not res then
    return nil, err
  end
  local n = res.numbers and res.numbers[1]
  if not n then
    return nil, Error.new{ kind = "protocol", code = "BAD_RESPONSE", message = "purchase returned no number" }
  end
  local cost = common.cents(res.cost)
  money.charged = money.charged + cost
  local rec = { piv_num_id = n.piv_num_id, phone_number = n.phone_number,
    country_code = n.country_code, expires_at = n.expires_at, cost = common.amount(cost) }
  st:set("purchased", rec)
  say("bought %s (%s), charged %s", rec.phone_number, rec.piv_num_id, common.amount(cost))
  return rec
end

--- Buys a number, starts Google QR verification on it, and awaits
-- verify.completed / verify.failed. opts: country_code, duration_months
-- (1), auto_renew (false), custom_name, gv_url, timeout (600 s), hooks (a
-- pivday.webhooks listener: required, verify has no status endpoint), api,
-- state (file to resume from), progress.
-- Returns {number=, phone=, message=, code=, task_id=, charged=, refunded=}
-- or nil and a pivday.Error carrying charged/refunded.
function M.buy_and_verify(opts)
  common.need(opts, "country_code", "string", "buy_and_verify")
  common.need(opts, "gv_url", "string", "buy_and_verify")
  local money = { charged = 0, refunded = 0 }
  if not opts.hooks then
    return common.fail(Error.new{ kind = "local", code = "NO_LISTENER",
      message = "buy_and_verify needs a webhook listener (verify has no status endpoint): "
        .. "pass hooks = pivday.webhooks{...}; nothing was bought" }, money)
  end
  local say = common.progress(opts, "buy_and_verify")
  local api = common.api(opts)
  local st, serr = state_mod.open(opts.state, "buy_and_verify")
  if not st then return common.fail(serr, money) end
  if st:finished() then
    st:close()
    say("already finished by an earlier run")
    return st.data.result
  end
  local result, err = M._buy_and_verify(api, opts, st, say, money)
  if result then st:finish(result) end
  st:close()
  return result, err
end

function M._buy_and_verify(api, opts, st, say, money)
  local number, err = buy(api, opts, st, say, money)
  if not number then return common.fail(err, money) end
  local id = number.piv_num_id
  local timeout = opts.timeout or 600
  local waiter = opts.hooks:expect({ "verify.completed", "verify.failed" }, { piv_num_id = id })
  local fee = st:get("verify_fee")
  if fee == nil then
    say("starting verification of %s", number.phone_number)
    local res, fee_or_err = common.charge(api, api.numbers.verify, id, { gv_url = opts.gv_url })
    if not res then
      waiter:cancel()
      -- It may have started: a re-run must await it, never start another.
      if fee_or_err.outcome_unknown then st:set("verify_fee", -1) end
      return common.fail(fee_or_err, money, { number = number })
    end
    fee = fee_or_err
    st:set("verify_fee", fee)
  else
    say("resuming: verification of %s already started", number.phone_number)
    if fee < 0 then fee = 0 end
  end
  money.charged = money.charged + fee
  say("waiting for verify.completed / verify.failed (up to %g s)", timeout)
  local ev, werr = waiter:wait(timeout)
  if not ev then return common.fail(werr, money, { number = number }) end
  local d = ev.data
  if ev.event_type == "verify.failed" then
    money.refunded = money.refunded + fee
    say("verification failed: %s (fee refunded)", tostring(d.error_code))
    return common.fail(Error.new{ kind = "api", code = d.error_code or "VERIFY_FAILED",
      message = d.error_message or "verification failed", task_id = d.task_id },
      money, { number = number })
  end
  local code = extract_code(d.captured_message, opts.pattern)
  say("verified: %s sent %q", tostring(d.captured_phone), tostring(d.captured_message))
  return {
    number = number, task_id = d.task_id, status = d.status,
    phone = d.captured_phone, message = d.captured_message, code = code,
    charged = common.amount(money.charged), refunded = common.amount(money.refunded),
  }
end

--- Awaits the next sms.received for a number and returns its code: the
-- payload's `code`, else the first match of `pattern` in the text.
-- opts: piv_num_id, hooks (required), timeout (300), pattern, progress.
-- Returns {code=, text=, received_at=, piv_num_id=} or nil, err.
function M.wait_sms_code(opts)
  local id = common.need(opts, "piv_num_id", "string", "wait_sms_code")
  if not opts.hooks then
    return nil, Error.new{ kind = "local", code = "NO_LISTENER",
      message = "wait_sms_code needs a webhook listener: pass hooks = pivday.webhooks{...}" }
  end
  local say = common.progress(opts, "wait_sms_code")
  local timeout = opts.timeout or 300
  say("waiting for an SMS to %s (up to %g s)", id, timeout)
  local ev, err = opts.hooks:wait("sms.received", { piv_num_id = id }, timeout)
  if not ev then return nil, err end
  local d = ev.data
  local code = d.code
  if code == json.null or code == "" then code = nil end
  if opts.pattern or not code then code = extract_code(d.text, opts.pattern) or code end
  say("SMS received: %q -> code %s", tostring(d.text), tostring(code))
  return { code = code, text = d.text, received_at = d.received_at, piv_num_id = id }
end

local function list_set(ids)
  local s = {}
  for _, id in ipairs(ids) do s[id] = true end
  return s
end

-- Polls each number until none is pending_restore; builds what the
-- webhook would have said (without refund amounts, which only it carries).
local function poll_restore(api, ids)
  return function()
    local restored, failed = {}, {}
    for _, id in ipairs(ids) do
      local n, err = api.numbers.get(id)
      if not n then return nil, err end
      if n.status == "pending_restore" then return nil end
      local item = { piv_num_id = id, phone_number = n.phone_number, country = n.country_code }
      if n.status == "active" then restored[#restored + 1] = item else failed[#failed + 1] = item end
    end
    return { data = { restored = restored, failed = failed } }
  end
end

--- Restores expired numbers and awaits number.restore_completed (or, with
-- no listener, polls each number's status). opts: piv_num_ids, retry_failed
-- (retry the failed ones once), hooks, api, timeout (600), progress.
-- Returns {restored=, failed=, charged=, refunded=} or nil, err.
function M.restore(opts)
  local ids = common.need(opts, "piv_num_ids", "table", "restore")
  local say = common.progress(opts, "restore")
  local api = common.api(opts)
  local money = { charged = 0, refunded = 0 }
  local restored, failed = {}, {}
  local pending = ids
  for round = 1, opts.retry_failed and 2 or 1 do
    if round == 2 then say("retrying %d failed number(s) once", #pending) end
    local want = list_set(pending)
    local waiter = opts.hooks and opts.hooks:expect("number.restore_completed", function(d)
      for _, list in ipairs { d.restored or {}, d.failed or {} } do
        for _, n in ipairs(list) do if want[n.piv_num_id] then return true end end
      end
      return false
    end)
    say("restoring %d number(s)", #pending)
    local res, err = api.numbers.restore{ piv_num_ids = json.array(pending) }
    if not res then
      if waiter then waiter:cancel() end
      return common.fail(err, money, { restored = restored, failed = failed })
    end
    money.charged = money.charged + common.cents(res.total_charged)
    local ev, werr = common.await_outcome(waiter, poll_restore(api, pending), opts.timeout or 600,
      opts.poll_interval, "restore")
    if not ev then return common.fail(werr, money, { restored = restored, failed = failed }) end
    local d = ev.data
    for _, n in ipairs(d.restored or {}) do restored[#restored + 1] = n end
    local again = {}
    for _, n in ipairs(d.failed or {}) do
      money.refunded = money.refunded + common.cents(n.refunded)
      if round == 1 and opts.retry_failed then again[#again + 1] = n.piv_num_id
      else failed[#failed + 1] = n end
    end
    say("restored %d, failed %d", #(d.restored or {}), #(d.failed or {}))
    if #again == 0 then break end
    pending = again
  end
  return { restored = restored, failed = failed,
    charged = common.amount(money.charged), refunded = common.amount(money.refunded) }
end

return M
