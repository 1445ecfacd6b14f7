-- A flow killed with SIGKILL mid-way and run again buys exactly one number:
-- real processes, a sandbox service and the buy_and_verify script.
local helper = require "helper"
local json = require "pivday.json"

local function free_port()
  local pivday = require "pivday"
  local s = assert(pivday.http.server{ handler = function() return 200 end })
  local port = s.port
  s:close()
  return port
end

describe("scripts/buy_and_verify.lua", function()
  it("resumes after SIGKILL and buys exactly one number", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local port = free_port()
    local script = ([[
      set -u
      bin=%s; dir=%s; port=%d
      $bin sandbox --port 0 --speed 2 >$dir/sb.out 2>$dir/sb.err &
      sb=$!
      for i in $(seq 1 100); do grep -q api_key $dir/sb.out && break; sleep 0.05; done
      base=$(awk '/^base_url:/{print $2}' $dir/sb.out); key=$(awk '/^api_key:/{print $2}' $dir/sb.out)
      export PIVDAY_API_KEY=$key PIVDAY_BASE_URL=$base
      run() {
        exec $bin scripts/buy_and_verify.lua --country SE --gv-url https://gv.google.com/verify/x \
          --port $port --journal $dir/hooks.journal --state $dir/flow.state --timeout 30 --json
      }
      run >$dir/run1.out 2>$dir/run1.err &
      r1=$!
      for i in $(seq 1 100); do grep -q 'webhooks expected at' $dir/run1.err && break; sleep 0.05; done
      url=$(sed -n 's/.*webhooks expected at \([^ ]*\).*/\1/p' $dir/run1.err)
      curl -s -o /dev/null -X PATCH -H 'content-type: application/json' \
        -d "{\"webhook_url\":\"$url\"}" "${base%%/api/v1}/_sandbox/keys/$key"
      for i in $(seq 1 100); do grep -q 'waiting for verify' $dir/run1.err && break; sleep 0.05; done
      kill -9 $r1; wait $r1 2>/dev/null
      echo "killed=$?"
      (run) >$dir/run2.out 2>$dir/run2.err
      echo "rc2=$?"
      curl -s -H "Authorization: Bearer $key" "$base/numbers" >$dir/numbers.json
      kill -TERM $sb; wait $sb
    ]]):format(helper.q(helper.bin), helper.q(dir), port)
    local out = helper.sh((script:gsub("%s+$", "")))
    local function slurp(name)
      local f = io.open(dir .. "/" .. name)
      if not f then return "" end
      local s = f:read("a")
      f:close()
      return s
    end
    local run2, numbers = slurp("run2.out"), slurp("numbers.json")
    local diag = out .. "\nrun1:\n" .. slurp("run1.err") .. "\nrun2:\n" .. slurp("run2.err")
    os.execute("rm -rf " .. helper.q(dir))
    assert.matches("killed=137", out, 1, true)
    assert.matches("rc2=0", out, 1, true, diag)
    local result = assert(json.decode(run2), diag)
    assert.is_true(result.ok, diag)
    assert.matches("^%d+$", result.result.code)
    local list = assert(json.decode(numbers))
    assert.equal(1, #list.data.numbers, diag)
    assert.equal(list.data.numbers[1].piv_num_id, result.result.number.piv_num_id)
  end)
end)
