-- Soak (issue 8), tagged #slow: 10,000 webhook deliveries, 10% of them
-- repeats of an event already acknowledged, to a listener process
-- (build/bin/pivday running soak_listener.lua with a journal) that is killed
-- with SIGKILL twice mid-stream and restarted within a second. The sender
-- retries each delivery until it is acknowledged, as a patient real sender
-- would. Afterwards:
--   * every distinct event is in the journal exactly once (lost = 0);
--   * a handler ran for every distinct event; it ran again only for events
--     replayed from the journal after a kill (their done mark had not been
--     written yet: at-least-once, as documented), never for a repeat
--     delivery;
--   * every delivery was acknowledged.
-- PIVDAY_SOAK_N overrides the count (valgrind/ASan runs use fewer).
local helper = require "helper"
local pivday = require "pivday"
local json = require "pivday.json"
local journal = require "pivday.webhooks.journal"

local T = helper.t

describe("hardening: soak with SIGKILLed listener #slow #soak", function()
  local dir
  local pid

  local function start(port)
    local cmd = ("%s spec/hardening/soak_listener.lua %s %d %s > %s 2>> %s & echo $!")
      :format(helper.q(helper.bin), helper.q(dir .. "/events.jsonl"), port,
        helper.q(dir .. "/handled.log"), helper.q(dir .. "/out.txt"), helper.q(dir .. "/err.txt"))
    local out = helper.sh(cmd)
    pid = assert(tonumber(out:match("(%d+)")), "no pid: " .. out)
    local deadline = pivday.now() + T(10)
    while pivday.now() < deadline do
      local f = io.open(dir .. "/out.txt")
      local s = f and f:read("a") or ""
      if f then f:close() end
      local p, path = s:match("READY (%d+) (%S+)")
      if p then return tonumber(p), path end
      pivday.sleep(0.02)
    end
    error("listener did not start: " .. (io.open(dir .. "/err.txt"):read("a") or ""))
  end

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. helper.q(dir)))
  end)

  teardown(function()
    if pid then os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    os.execute("rm -rf " .. helper.q(dir))
  end)

  it("loses nothing and handles each event once across two SIGKILLs", function()
    local N = tonumber(os.getenv("PIVDAY_SOAK_N")) or (helper.scale > 1 and 2000 or 10000)
    local DUP_EVERY = 10           -- every 10th delivery repeats an acked event
    local SENDERS = 16
    local kills_at = { N * 3 // 10, N * 7 // 10 }

    local port, path
    local url
    local stats = { sent = 0, acked = 0, attempts = 0, retries = 0, kills = 0, distinct = 0 }
    local acked_events = {}        -- bodies acknowledged, for repeats
    local next_delivery = 0
    local killing = false

    pivday.run(function()
      port, path = start(0)
      url = ("http://127.0.0.1:%d%s"):format(port, path)

      local function deliver(body)
        while true do
          stats.attempts = stats.attempts + 1
          local res = pivday.http.request { method = "POST", url = url, body = body, timeout = T(5),
            connect_timeout = T(1), headers = { ["content-type"] = "application/json" } }
          if res and res.status == 200 then return end
          stats.retries = stats.retries + 1
          pivday.sleep(0.05)
        end
      end

      local function kill_and_restart()
        killing = true
        os.execute("kill -9 " .. pid)
        -- Gone at once (SIGKILL); back within a second.
        os.execute("sleep 0.3")
        stats.kills = stats.kills + 1
        local p2 = start(port)
        assert(p2 == port)
        killing = false
      end

      local function sender()
        while true do
          next_delivery = next_delivery + 1
          local i = next_delivery
          if i > N then return end
          if not killing and (i == kills_at[1] or i == kills_at[2]) then kill_and_restart() end
          local body
          if i % DUP_EVERY == 0 and #acked_events > 0 then
            body = acked_events[(i * 7919) % #acked_events + 1]
          else
            stats.distinct = stats.distinct + 1
            body = json.encode { event_type = "soak.event", timestamp = "2026-01-01T00:00:00Z",
              data = { n = i, pad = ("p"):rep(i % 200) } }
          end
          stats.sent = stats.sent + 1
          deliver(body)
          stats.acked = stats.acked + 1
          acked_events[#acked_events + 1] = body
        end
      end

      local t0 = pivday.now()
      local fns = {}
      for k = 1, SENDERS do fns[k] = sender end
      pivday.gather(table.unpack(fns))
      stats.seconds = pivday.now() - t0
      -- Let the last handlers finish, then stop it cleanly.
      pivday.sleep(0.5)
      os.execute("kill -TERM " .. pid)
      local deadline = pivday.now() + T(10)
      while pivday.now() < deadline do
        local f = io.open(dir .. "/out.txt")
        local s = f and f:read("a") or ""
        if f then f:close() end
        if s:match("STATS") then break end
        pivday.sleep(0.05)
      end
      pid = nil
    end)

    -- The journal: every distinct event exactly once.
    local recs, summary = journal.read(dir .. "/events.jsonl")
    assert.is_truthy(recs, summary)
    local in_journal, journal_dups = {}, 0
    for _, r in ipairs(recs) do
      local n = r.event.data.n
      if in_journal[n] then journal_dups = journal_dups + 1 end
      in_journal[n] = true
    end
    local journaled = 0
    for _ in pairs(in_journal) do journaled = journaled + 1 end

    -- The handlers.
    local runs, handled, replays, repeat_runs = 0, {}, 0, 0
    for line in io.lines(dir .. "/handled.log") do
      local n, how = line:match("^(%d+) ([r%-])$")
      n = tonumber(n)
      runs = runs + 1
      if handled[n] then
        if how == "r" then replays = replays + 1 else repeat_runs = repeat_runs + 1 end
      end
      handled[n] = true
    end
    local n_handled = 0
    for _ in pairs(handled) do n_handled = n_handled + 1 end
    local lost = 0
    for i = 1, N do
      if i % DUP_EVERY ~= 0 and not in_journal[i] then lost = lost + 1 end
    end
    local suppressed = stats.acked - journaled

    print(("\nsoak: %d deliveries (%d distinct, %d repeats) in %.1f s with %d SIGKILLs; "
      .. "acknowledged %d (%d attempts, %d retried); journaled %d; handled %d (%d runs, %d replays after a kill); "
      .. "duplicates suppressed %d; lost %d")
      :format(stats.sent, stats.distinct, stats.sent - stats.distinct, stats.seconds, stats.kills,
        stats.acked, stats.attempts, stats.retries, journaled, n_handled, runs, replays, suppressed, lost))

    assert.equal(2, stats.kills)
    assert.equal(N, stats.sent)
    assert.equal(N, stats.acked)
    assert.equal(0, lost)
    assert.equal(0, journal_dups)
    assert.equal(stats.distinct, journaled)
    assert.equal(stats.distinct, n_handled)
    assert.equal(0, repeat_runs)   -- a repeat delivery never reached a handler
    assert.is_true(replays <= 2 * 64, "replays: " .. replays)  -- only events in flight at a kill
  end)
end)
