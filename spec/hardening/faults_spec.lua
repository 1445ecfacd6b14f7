-- Fault injection (issue 8): the API client under the sandbox's faults.
--
-- 1000 calls from 50 coroutines, GETs mixed with charging POSTs
-- (numbers.purchase), while the sandbox injects a fault into 20% of the
-- requests: 500, 503, 429 with Retry-After, a connection dropped before or
-- after the work was done, or a delay. Then:
--   * every call returned a value or nil + a structured pivday.Error;
--   * no call outlived its deadline (each is also watched by an outer
--     timeout that would catch a hang);
--   * the ledger shows each charge exactly once: one purchase ledger row per
--     number, and no call (tagged by custom_name) bought two numbers;
--   * the request log shows no charging POST sent twice: per call, at most
--     one purchase request got past the rate limiter (a 429 is the only
--     answer after which a POST is sent again).
local helper = require "helper"
local pivday = require "pivday"
local Error = require "pivday.error"
local client = require "pivday.client"
local policy = require "pivday.sandbox.policy"

local T = helper.t

describe("hardening: the client under injected faults #faults", function()
  local sb, api
  local saved_log_limit

  setup(function()
    saved_log_limit = policy.limits.request_log
    policy.limits.request_log = 100000 -- keep every request for the checks
    sb = assert(pivday.sandbox {})
    client._reset_holds()
    sb:update_account { balance = 100000 }
    sb:set_country { country_code = "SE", stock = 100000 }
    api = pivday.client {
      api_key = sb.api_key, base_url = sb.base_url,
      timeout = T(3), connect_timeout = T(2), deadline = T(8),
      max_retries = 4, backoff_base = 0.01, backoff_max = 0.05,
      -- The Retry-After sent is honoured in full by the spec below; here
      -- it is capped so forty host-wide pauses don't add up to minutes.
      retry_after_cap = 0.2,
      concurrency = 16,
    }
  end)

  teardown(function()
    policy.limits.request_log = saved_log_limit
    if sb then sb:close() end
    client._reset_holds()
  end)

  -- One fault for the next API request, whichever coroutine sends it.
  local KINDS = {
    function() return { status = 500 } end,
    function() return { status = 503 } end,
    function() return { status = 429, retry_after = 1 } end,
    function() return { drop = "before" } end,
    function() return { drop = "after" } end,
    function() return { delay = 0.3 } end,
  }

  it("1000 calls from 50 coroutines, 20% faulted: structured outcomes, no hang, no double charge", function()
    local N_CO, PER_CO = 50, 20
    local rng_state = 12345
    local function rand() -- deterministic, shared by all coroutines
      rng_state = (rng_state * 1103515245 + 12345) % 2147483648
      return rng_state / 2147483648
    end
    local injected, results = 0, {}
    local outer = T(8) + T(4)   -- a call still running then is hung

    local function one_call(co, i)
      if rand() < 0.2 then
        injected = injected + 1
        local f = KINDS[math.floor(rand() * #KINDS) + 1]()
        f.match, f.times = "/*", 1
        sb:fault(f)
      end
      local tag = ("c%02d-%02d"):format(co, i)
      local charging = rand() < 0.5
      local started = pivday.now()
      local res, err = pivday.timeout(outer, function()
        if charging then
          return api.numbers.purchase { country_code = "SE", duration_months = 1, auto_renew = false, custom_name = tag }
        end
        return api.account.get()
      end)
      results[#results + 1] = { tag = tag, charging = charging, res = res, err = err,
        took = pivday.now() - started }
    end

    local t0 = pivday.now()
    pivday.run(function()
      local fns = {}
      for co = 1, N_CO do
        fns[co] = function() for i = 1, PER_CO do one_call(co, i) end end
      end
      pivday.gather(table.unpack(fns))
    end)
    local elapsed = pivday.now() - t0
    sb:clear_faults()

    -- Every call: a value, or nil + pivday.Error with a kind and a code;
    -- and none cut by the outer watchdog.
    assert.equal(N_CO * PER_CO, #results)
    local ok, failed, by_code = 0, 0, {}
    for _, r in ipairs(results) do
      if r.res ~= nil then
        ok = ok + 1
      else
        failed = failed + 1
        assert.is_true(Error.is(r.err), ("%s: not a pivday.Error: %s"):format(r.tag, tostring(r.err)))
        assert.is_string(r.err.kind)
        assert.is_string(r.err.code)
        by_code[r.err.code] = (by_code[r.err.code] or 0) + 1
      end
      assert.is_true(r.took < outer - 0.05, r.tag .. " hung until the watchdog: " .. r.took .. " s")
    end

    -- Charges: one ledger row per number bought, each number once, and no
    -- call bought more than one number.
    local ledger = sb:ledger {}
    local st = sb.app.st
    local charged_refs, purchase_rows = {}, 0
    for _, row in ipairs(ledger.rows) do
      if row.reason == "number purchase" then
        purchase_rows = purchase_rows + 1
        assert.is_nil(charged_refs[row.ref], "number charged twice: " .. tostring(row.ref))
        charged_refs[row.ref] = true
      end
    end
    local numbers_by_tag, numbers = {}, 0
    for _, id in ipairs(st.data.numbers.ids) do
      local n = st.data.numbers.by_id[id]
      numbers = numbers + 1
      if n.custom_name then
        assert.is_nil(numbers_by_tag[n.custom_name], "call " .. n.custom_name .. " bought two numbers")
        numbers_by_tag[n.custom_name] = true
      end
    end
    assert.equal(numbers, purchase_rows)
    -- A call that returned success owns exactly one number.
    for _, r in ipairs(results) do
      if r.charging and r.res then
        assert.is_true(numbers_by_tag[r.tag], r.tag .. " succeeded but bought nothing")
      end
    end

    -- Requests: purchase POSTs that were not rate limited, at most one per
    -- purchase call; and every charge came from one of them.
    -- (A 503 SERVER_UNAVAILABLE is documented as "not done, refunded", so
    -- the client may send the POST again after it too.)
    local posts, posts_past_429, limited, by_fault = 0, 0, 0, {}
    for _, q in ipairs(sb:requests {}) do
      if q.method == "POST" and q.path:match("/numbers/purchase$") then
        posts = posts + 1
        local f = q.fault or tostring(q.status)
        by_fault[f] = (by_fault[f] or 0) + 1
        if q.status == 429 or q.fault == "503" then limited = limited + 1 else posts_past_429 = posts_past_429 + 1 end
      end
    end
    local fl = {}
    for k, v in pairs(by_fault) do fl[#fl + 1] = k .. "=" .. v end
    table.sort(fl)
    print("\npurchase requests by outcome: " .. table.concat(fl, " "))
    local purchase_calls = 0
    for _, r in ipairs(results) do if r.charging then purchase_calls = purchase_calls + 1 end end
    assert.is_true(posts_past_429 <= purchase_calls,
      ("%d purchase requests got past the rate limiter for %d calls: a POST was sent twice"):format(posts_past_429, purchase_calls))
    assert.is_true(purchase_rows <= posts_past_429)

    local codes = {}
    for k, v in pairs(by_code) do codes[#codes + 1] = k .. "=" .. v end
    table.sort(codes)
    print(("\nfaults: %d calls in %.1f s, %d faults injected; %d ok, %d structured errors (%s); "
      .. "%d purchase POSTs (%d answered 429/503), %d charges")
      :format(#results, elapsed, injected, ok, failed, table.concat(codes, " "), posts, limited, purchase_rows))
    assert.is_true(injected >= 150 and injected <= 250, "about 20% faulted, got " .. injected)
  end)

  it("honours a 429's Retry-After in full when under the cap", function()
    local api2 = pivday.client { api_key = sb.api_key, base_url = sb.base_url, retry_after_cap = 5, deadline = T(10) }
    client._reset_holds()
    sb:fault { match = "/account", status = 429, retry_after = 1, times = 1 }
    local t0 = pivday.now()
    local res, err = api2.account.get()
    assert.is_truthy(res, tostring(err))
    assert.is_true(pivday.now() - t0 >= 0.95, "retried before the Retry-After had passed")
  end)
end)
