--- pivday.sandbox.state: everything the emulated service knows, and its file.
--
-- One plain table (`st.data`) holds accounts, keys, seed data (countries,
-- servers, TLDs, tiers), every resource, pending jobs, the money ledger and
-- the webhook delivery log, so that saving is one JSON encode and a restart
-- loses nothing. Resources live in collections {by_id = {}, ids = {}} that
-- keep insertion order. Money is integer cents; every balance change is a
-- ledger row, so balance == opening balance + sum of rows, to the cent.
local json = require "pivday.json"
local policy = require "pivday.sandbox.policy"

local M = {}

local FORMAT, VERSION = "pivday-sandbox-state", 1

local State = { __name = "pivday.sandbox.State" }
State.__index = State

local COLLECTIONS = { "numbers", "messages", "orders", "domains", "queue", "whites", "tasks", "downloads" }

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = deep_copy(x) end
  return c
end

-- ids ------------------------------------------------------------------------

local ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

local function random_chars(n, alphabet)
  alphabet = alphabet or ALNUM
  local t = {}
  for i = 1, n do
    local k = math.random(#alphabet)
    t[i] = alphabet:sub(k, k)
  end
  return table.concat(t)
end
M.random_chars = random_chars

--- A random UUID (version 4 layout), with a readable prefix when given.
function M.uuid(prefix)
  local h = random_chars(32, "0123456789abcdef")
  local k = math.random(4)
  local variant = ("89ab"):sub(k, k)
  local u = ("%s-%s-4%s-%s%s-%s"):format(h:sub(1, 8), h:sub(9, 12), h:sub(14, 16),
    variant, h:sub(18, 20), h:sub(21, 32))
  return prefix and (prefix .. "-" .. u) or u
end

--- A number id shaped like the reference's ("vzPA1-kHKSg-EAL7e-Jqd3o").
function M.num_id()
  return ("%s-%s-%s-%s"):format(random_chars(5), random_chars(5), random_chars(5), random_chars(5))
end

--- A new API key.
function M.new_key_token()
  return "pd_sandbox_" .. random_chars(32)
end

-- a fresh state -----------------------------------------------------------------

local function seed(data)
  data.countries, data.country_order = {}, {}
  for _, c in ipairs(policy.countries) do
    data.countries[c.country_code] = deep_copy(c)
    data.country_order[#data.country_order + 1] = c.country_code
  end
  data.servers, data.server_order = {}, {}
  for _, s in ipairs(policy.proxy_servers) do
    data.servers[s.id] = deep_copy(s)
    data.server_order[#data.server_order + 1] = s.id
  end
  data.tlds = deep_copy(policy.tlds)
  data.taken = {}
  for _, d in ipairs(policy.taken_domains) do data.taken[d] = true end
  data.tiers = deep_copy(policy.tiers)
end

--- A fresh state at sandbox time `now`, with the default account and one
-- key with every scope (`api_key` keeps a known token across resets).
function M.fresh(now, api_key)
  local data = {
    format = FORMAT, version = VERSION, now = now,
    seq = { message = 0, task = 0, delivery = 0, job = 0, ledger = 0 },
    accounts = {}, account_order = {}, keys = {},
    jobs = {}, ledger = {}, deliveries = {}, events = {}, forced = {}, faults = {},
  }
  for _, c in ipairs(COLLECTIONS) do data[c] = { by_id = {}, ids = {} } end
  seed(data)
  local st = setmetatable({ data = data }, State)
  local acct = st:create_account({ email = policy.default_account.email,
    balance_cents = policy.default_account.balance_cents }, now)
  st:create_key({ user_id = acct.user_id, token = api_key }, now)
  data.default_user = acct.user_id
  data.default_key = api_key or st:keys_of(acct.user_id)[1].key
  return st
end

-- file --------------------------------------------------------------------------

--- Writes the state to `path` atomically (a temporary file, then rename), so
-- a crash mid-write leaves the previous file intact.
function State:save(path, now)
  self.data.now = now or self.data.now
  local text = json.encode(self.data)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, "pivday.sandbox: cannot write state file: " .. tostring(err) end
  local ok, werr = f:write(text)
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    return nil, "pivday.sandbox: cannot write state file " .. tmp .. ": " .. tostring(werr or cerr)
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, "pivday.sandbox: cannot replace state file " .. path .. ": " .. tostring(rerr)
  end
  return true
end

--- Reads a state file. Returns the state; `nil, nil` when the file does not
-- exist; `nil, message` when it exists but cannot be used (never a silent
-- reset: the caller reports it).
function M.load(path)
  local f = io.open(path, "rb")
  if not f then return nil, nil end
  local text = f:read("a")
  f:close()
  local data, err = json.decode(text or "")
  if data == nil then
    return nil, ("pivday.sandbox: state file %s is corrupt (%s); fix it or delete it to start afresh")
      :format(path, tostring(err))
  end
  if type(data) ~= "table" or data.format ~= FORMAT then
    return nil, ("pivday.sandbox: %s is not a sandbox state file; fix it or delete it to start afresh"):format(path)
  end
  if data.version ~= VERSION then
    return nil, ("pivday.sandbox: state file %s has version %s, this sandbox reads version %d")
      :format(path, tostring(data.version), VERSION)
  end
  for _, c in ipairs(COLLECTIONS) do
    if type(data[c]) ~= "table" or type(data[c].by_id) ~= "table" or type(data[c].ids) ~= "table" then
      return nil, ("pivday.sandbox: state file %s is corrupt (collection %s); fix it or delete it"):format(path, c)
    end
  end
  return setmetatable({ data = data }, State)
end

-- collections -------------------------------------------------------------------

--- Adds `obj` (which has `id`) to collection `coll`.
function State:add(coll, obj)
  local c = self.data[coll]
  assert(c.by_id[obj.id] == nil, "duplicate id in " .. coll)
  c.by_id[obj.id] = obj
  c.ids[#c.ids + 1] = obj.id
  return obj
end

function State:get(coll, id)
  if type(id) ~= "string" then return nil end
  return self.data[coll].by_id[id]
end

--- The object when it exists and belongs to `user_id`.
function State:owned(coll, id, user_id)
  local obj = self:get(coll, id)
  if obj and obj.user_id == user_id then return obj end
  return nil
end

function State:remove(coll, id)
  local c = self.data[coll]
  if not c.by_id[id] then return end
  c.by_id[id] = nil
  for i, x in ipairs(c.ids) do
    if x == id then table.remove(c.ids, i) break end
  end
end

--- Objects of `coll` in insertion order, those for which `pred` is true
-- (all when pred is nil).
function State:list(coll, pred)
  local c, out = self.data[coll], {}
  for _, id in ipairs(c.ids) do
    local obj = c.by_id[id]
    if not pred or pred(obj) then out[#out + 1] = obj end
  end
  return out
end

--- Next value of a named integer sequence.
function State:next_seq(name)
  local seq = self.data.seq
  seq[name] = (seq[name] or 0) + 1
  return seq[name]
end

-- accounts and keys -------------------------------------------------------------

--- Creates an account: fields email, balance_cents, disabled (list of
-- features answered with PERMISSION_DENIED).
function State:create_account(fields, now)
  local uid = M.uuid("usr")
  local acct = {
    user_id = uid,
    email = fields.email or (uid:sub(5, 12) .. "@example.com"),
    balance = 0, opening = 0,
    disabled = {},
    created_at = now,
  }
  for _, f in ipairs(fields.disabled or {}) do acct.disabled[f] = true end
  self.data.accounts[uid] = acct
  self.data.account_order[#self.data.account_order + 1] = uid
  if fields.balance_cents and fields.balance_cents ~= 0 then
    self:credit(uid, fields.balance_cents, "opening balance", nil, now)
  end
  return acct
end

function State:account(uid)
  return self.data.accounts[uid]
end

--- Creates a key: fields user_id, scopes (default every scope), webhook_url,
-- rate_limit {limit, window}, token (default random).
function State:create_key(fields, now)
  local scopes = fields.scopes
  if not scopes then
    local set = {}
    for _, s in pairs(policy.scopes) do set[s] = true end
    scopes = {}
    for s in pairs(set) do scopes[#scopes + 1] = s end
    table.sort(scopes)
  end
  local key = {
    key = fields.token or M.new_key_token(),
    user_id = fields.user_id,
    scopes = scopes,
    revoked = false,
    webhook_url = fields.webhook_url,
    rate_limit = fields.rate_limit,
    created_at = now,
  }
  self.data.keys[key.key] = key
  return key
end

function State:key(token)
  return self.data.keys[token]
end

--- The keys of an account, oldest first.
function State:keys_of(uid)
  local out = {}
  for _, k in pairs(self.data.keys) do
    if k.user_id == uid then out[#out + 1] = k end
  end
  table.sort(out, function(a, b)
    if a.created_at ~= b.created_at then return a.created_at < b.created_at end
    return a.key < b.key
  end)
  return out
end

-- money -------------------------------------------------------------------------

local function post(self, uid, amount, reason, ref, now)
  local acct = self.data.accounts[uid]
  acct.balance = acct.balance + amount
  local row = {
    id = self:next_seq("ledger"), at = now, user_id = uid,
    amount = amount, balance = acct.balance, reason = reason, ref = ref,
  }
  self.data.ledger[#self.data.ledger + 1] = row
  return row
end

--- Takes `cents` (> 0) from the account. Returns the ledger row, or nil and
-- the available balance when it is not enough (nothing is taken then).
function State:charge(uid, cents, reason, ref, now)
  assert(math.type(cents) == "integer" and cents >= 0, "charge needs integer cents")
  local acct = self.data.accounts[uid]
  if acct.balance < cents then return nil, acct.balance end
  return post(self, uid, -cents, reason, ref, now)
end

--- Gives `cents` (>= 0) to the account: refunds and top-ups.
function State:credit(uid, cents, reason, ref, now)
  assert(math.type(cents) == "integer" and cents >= 0, "credit needs integer cents")
  return post(self, uid, cents, reason, ref, now)
end

--- Ledger rows of an account (all accounts when uid is nil).
function State:ledger(uid)
  local out = {}
  for _, row in ipairs(self.data.ledger) do
    if uid == nil or row.user_id == uid then out[#out + 1] = row end
  end
  return out
end

M.State = State
return M
