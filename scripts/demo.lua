-- make demo: what works today, end to end on this machine.
-- The flagship flow (buy a number -> verify -> await verify.completed
-- against the embedded sandbox) replaces this once the sandbox, the API
-- client and the webhook listener have landed (issues 3-6).
local pivday = require "pivday"

pivday.run(function()
  -- A local HTTP server whose handler itself waits before answering.
  local srv = assert(pivday.http.server{ handler = function(req)
    pivday.sleep(0.05)
    return 200, { ["content-type"] = "application/json" },
      pivday.json.encode{ path = req.path, ok = true }
  end })
  io.stderr:write(("server listening on %s\n"):format(srv.url))

  -- 200 requests at once from 200 coroutines: they overlap, so the whole
  -- batch takes about one handler delay, not 200 of them.
  local t0 = pivday.now()
  local fns = {}
  for i = 1, 200 do
    fns[i] = function()
      local res = assert(pivday.http.request{ url = srv.url .. "/item/" .. i })
      return pivday.json.decode(res.body).path
    end
  end
  local results = { pivday.gather(table.unpack(fns)) }
  print(("%d concurrent requests answered in %.2f s; last: %s"):format(
    #results, pivday.now() - t0, results[#results][1]))

  -- A deadline that fires: the request is cancelled, the loop goes on.
  local res, err = pivday.timeout(0.01, pivday.http.request, { url = srv.url .. "/slow" })
  print(("with a 10 ms deadline: %s"):format(res and "answered" or tostring(err)))
  srv:close()
end)

print("still to come: the sandbox (issue 3), the API client (issue 4), webhooks (issue 5)"
  .. " and the flagship buy -> verify flow (issue 6)")
