--- pivday.sandbox.jobs: the service's asynchronous work, on the sandbox clock.
--
-- A job is a row {id, due, kind, args} in the state (so pending work
-- survives a restart); app:tick() runs due jobs in (due, id) order. Each
-- kind below is one step of a documented async flow; a step that is not the
-- last schedules the next one. Delays come from policy.delays.
local json = require "pivday.json"
local money = require "pivday.sandbox.money"
local policy = require "pivday.sandbox.policy"
local views = require "pivday.sandbox.views"

local M = {}

local null = json.null
local delays = policy.delays

--- Queues job `kind` to run `delay` sandbox seconds from now.
function M.schedule(app, delay, kind, args)
  assert(M.kinds[kind], "pivday.sandbox: unknown job kind " .. tostring(kind))
  local job = { id = app.st:next_seq("job"), due = app:now() + delay, kind = kind, args = args or {} }
  local list = app.st.data.jobs
  list[#list + 1] = job
  return job
end

--- The earliest due job: its due time and the job, or nil.
function M.next(app)
  local best
  for _, job in ipairs(app.st.data.jobs) do
    if not best or job.due < best.due or (job.due == best.due and job.id < best.id) then best = job end
  end
  if best then return best.due, best end
  return nil
end

--- Removes `job` from the queue and runs it.
function M.run(app, job)
  local list = app.st.data.jobs
  for i, j in ipairs(list) do
    if j == job then table.remove(list, i) break end
  end
  M.kinds[job.kind](app, job.args)
end

M.kinds = {}

-- SMS: queued -> sent -> delivered | failed (sms.status_updated each step).
-- args: id (message id), fail (forced failure).
M.kinds["sms.advance"] = function(app, args)
  local m = app.st:get("messages", args.id)
  if not m then return end
  local old, new = m.status, nil
  if old == "queued" then
    new = "sent"
  elseif old == "sent" then
    new = args.fail and "failed" or "delivered"
  else
    return
  end
  m.status = new
  local failed = new == "failed"
  app:emit(m.user_id, "sms.status_updated", {
    piv_num_id = m.number_id,
    message_id = m.id,
    old_status = old,
    new_status = new,
    error_code = failed and policy.sms_failure.code or null,
    error_message = failed and policy.sms_failure.message or null,
  })
  if new == "sent" then
    app:schedule(delays.sms_delivered, "sms.advance", args)
  end
end

--- Creates an outbound message and starts its status flow. Returns it.
function M.send_sms(app, n, to, body, fail)
  local seq = app.st:next_seq("message")
  local m = app.st:add("messages", {
    id = tostring(seq), seq = seq, user_id = n.user_id, number_id = n.id,
    from = n.phone, to = to, body = body, direction = "outbound", status = "queued",
    at = app:now(),
  })
  app:schedule(delays.sms_sent, "sms.advance", { id = m.id, fail = fail })
  return m
end

-- Verify: verify.completed (an SMS to Google's number, captured) or
-- verify.failed with the fee refunded. args: task_id, number_id, fee,
-- gv_url, outcome (forced error_code or nil).
local function gv_url_ok(url)
  local host = url:match("^https://([^/?#:]+)")
  return host ~= nil and (host == "google.com" or host:sub(-11) == ".google.com")
end

M.kinds["verify.finish"] = function(app, args)
  local n = app.st:get("numbers", args.number_id)
  local code = args.outcome
  if not code and not gv_url_ok(args.gv_url) then code = policy.verify.invalid_url_code end
  if not code and (not n or n.status ~= "active") then code = "VERIFY_REJECTED" end
  if code then
    app:refund(args.user_id, args.fee, "verify refund", "task:" .. args.task_id)
    app:emit(args.user_id, "verify.failed", {
      task_id = args.task_id,
      piv_num_id = args.number_id,
      status = "failed",
      error_code = code,
      error_message = policy.verify.failure_messages[code] or ("Verification failed (" .. code .. ")"),
    })
    return
  end
  local text = policy.verify.message:format(("%06d"):format(math.random(0, 999999)))
  local m = M.send_sms(app, n, policy.verify.captured_phone, text)
  app:emit(args.user_id, "verify.completed", {
    task_id = args.task_id,
    piv_num_id = n.id,
    status = "sms_sent",
    captured_phone = policy.verify.captured_phone,
    captured_message = text,
    sms_message_id = m.seq,
    sms_status = m.status,
  })
end

-- Number restore: each number restored for a month from now, or back to
-- expired with its share refunded; one number.restore_completed per batch.
-- args: user_id, batch, items {{id, cost}}, fail (true | {ids} | nil).
M.kinds["restore.finish"] = function(app, args)
  local restored, failed = json.array(), json.array()
  local refunded = 0
  local fail_set = {}
  if type(args.fail) == "table" then for _, id in ipairs(args.fail) do fail_set[id] = true end end
  for _, item in ipairs(args.items) do
    local n = app.st:get("numbers", item.id)
    if n then
      if args.fail == true or fail_set[n.id] then
        n.status = "expired"
        app:refund(args.user_id, item.cost, "restore refund", n.id)
        refunded = refunded + item.cost
        failed[#failed + 1] = { piv_num_id = n.id, phone_number = n.phone, country = n.country,
          refunded = money.json(item.cost) }
      else
        n.status = "active"
        n.expires_at = app:now() + policy.MONTH
        n.renew_failed_for = nil
        restored[#restored + 1] = { piv_num_id = n.id, phone_number = n.phone, country = n.country }
      end
    end
  end
  app:emit(args.user_id, "number.restore_completed", {
    restored = restored, failed = failed,
    total_restored = #restored, total_failed = #failed,
    total_refunded = money.json(refunded),
  })
end

-- Domain registration: queue pending -> completed (domain.registered) or
-- failed (domain.failed, fee refunded). args: queue_id, outcome ("taken").
M.kinds["domain.register"] = function(app, args)
  local q = app.st:get("queue", args.queue_id)
  local d = q and app.st:get("domains", q.domain_id)
  if not d then return end
  local now = app:now()
  d.updated_at = now
  if args.outcome then
    d.status = "failed"
    q.status = "failed"
    q.error = "Domain is no longer available"
    app:refund(d.user_id, q.cost, "domain registration refund", d.id)
    app:emit(d.user_id, "domain.failed", { domain_id = d.id, domain_name = d.name, error = q.error })
    return
  end
  d.status = "active"
  d.registered_at = now
  d.expires_at = now + d.period * policy.YEAR
  if d.cloudflare then
    d.cloudflare_status, d.ssl_type, d.ssl_status = "active", "lets_encrypt", "active"
    d.ssl_expires_at = now + 90 * policy.DAY
  end
  q.status = "completed"
  app:emit(d.user_id, "domain.registered", {
    domain_id = d.id, domain_name = d.name,
    registered_at = views.time(d.registered_at), expires_at = views.time(d.expires_at),
    cloudflare_enabled = d.cloudflare,
  })
end

-- Domain renewal: queue pending -> completed (expiry + period years) or
-- failed (refund). No webhook is documented for renewals.
M.kinds["domain.renew"] = function(app, args)
  local q = app.st:get("queue", args.queue_id)
  local d = q and app.st:get("domains", q.domain_id)
  if not d then return end
  local now = app:now()
  if args.outcome then
    q.status, q.error = "failed", "Renewal failed at the registry"
    app:refund(d.user_id, q.cost, "domain renewal refund", d.id)
    return
  end
  d.expires_at = math.max(d.expires_at or now, now) + q.period * policy.YEAR
  d.status = "active"
  d.renew_failed_for = nil
  d.updated_at = now
  q.status = "completed"
end

-- White generation: queued -> processing -> done (white.completed) or
-- failed (white.failed, price refunded). args: id.
M.kinds["white.advance"] = function(app, args)
  local w = app.st:get("whites", args.id)
  if not w then return end
  if w.status == "queued" then
    w.status = "processing"
    app:schedule(delays.white_generate, "white.advance", args)
  elseif w.status == "processing" then
    if w.fail then
      w.status = "failed"
      app:refund(w.user_id, w.price, "white refund", w.id)
      app:emit(w.user_id, "white.failed", { job_id = w.id, name = w.name, error = w.fail })
    else
      w.status = "done"
      app:emit(w.user_id, "white.completed", { job_id = w.id, name = w.name, tier_key = w.tier_key,
        country = w.country })
    end
  end
end

return M
