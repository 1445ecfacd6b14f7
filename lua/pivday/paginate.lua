--- pivday.paginate: lazy iterators over the API's offset-paginated lists.
--
-- A list page is `data = { <items key> = {...}, pagination = {total, limit,
-- offset} }`. The iterator is a plain closure, not coroutine.wrap: fetching a
-- page may yield to pivday's event loop, and a wrapped generator would catch
-- that yield instead of the loop.
local M = {}

--- Makes a `for` iterator over every item of a paginated list.
-- `fetch(offset, limit)` returns the page's `data` table, or nil and an
-- error; `opts.items` names the list key, `opts.limit` the page size and
-- `opts.offset` where to start (default 0). Pages are fetched only when the
-- previous one is used up. Iteration stops at `pagination.total`, or at the
-- first empty page (a guard against a total that never arrives). A page that
-- fails raises its error object: a `for` loop has no way to receive
-- `nil, err`.
function M.iterator(fetch, opts)
  local items_key, limit = opts.items, opts.limit
  local offset = opts.offset or 0
  local buf, i = nil, 0
  local done = false

  return function()
    while true do
      if buf and i < #buf then
        i = i + 1
        return buf[i]
      end
      if done then return nil end
      local data, err = fetch(offset, limit)
      if data == nil then error(err, 0) end
      local page = type(data) == "table" and data[items_key]
      if type(page) ~= "table" then
        error(("pagination: the page has no '%s' list"):format(items_key), 0)
      end
      buf, i = page, 0
      -- Advance by what came back, not by what was asked: a server that
      -- clamps `limit` must not make us skip items.
      offset = offset + #page
      local p = data.pagination
      local total = type(p) == "table" and math.tointeger(p.total)
      if #page == 0 or (total and offset >= total) then
        done = true
      end
    end
  end
end

return M
