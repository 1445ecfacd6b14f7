-- bench/wrk_webhook.lua: wrk script for row 2.
--
--     wrk -t1 -c64 -d10s -s bench/wrk_webhook.lua URL
--
-- Every request POSTs a distinct, valid sms.received event of exactly 310
-- bytes (a listener rightly drops repeated deliveries of one event, so a
-- fixed body would measure its dedupe, not its handling). At the end it
-- prints one line: wrk_requests= wrk_ok= wrk_non2xx= wrk_errors=.
local SIZE = 310
local seq = 0
local path = "/"
local headers = {
  ["Content-Type"] = "application/json",
  ["User-Agent"] = "piv.day-webhook/1.0",
}

local HEAD = '{"event_type":"sms.received","timestamp":"2026-05-22T12:34:56Z",'
  .. '"data":{"piv_num_id":"vzPA1-kHKSg-EAL7e-Jqd3o","text":"Your verification code is '
local MID = '","code":"'
local TAIL = '","country":"SE","received_at":"2026-05-22T12:34:56Z"}}'
-- Two 10-digit copies of the sequence number; the text is padded so the
-- event is SIZE bytes.
local PAD = SIZE - (#HEAD + 10 + #MID + 10 + #TAIL)
assert(PAD >= 2, "event template too long")
local PADDING = "." .. string.rep(" ", PAD - 1)

function init(args)
  path = wrk.path ~= "" and wrk.path or "/"
end

function request()
  seq = seq + 1
  local n = string.format("%010d", seq)
  return wrk.format("POST", path, headers, HEAD .. n .. PADDING .. MID .. n .. TAIL)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("wrk_requests=%d wrk_ok=%d wrk_non2xx=%d wrk_errors=%d\n",
    summary.requests, summary.requests - e.status, e.status,
    e.connect + e.read + e.write + e.timeout))
end
