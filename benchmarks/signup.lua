-- wrk script for the HTTP scenario: POST /api/auth/sign-up, a new email on every request.
local counter = 0
local tag = "0"

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  tag = tostring(math.random(1, 1000000000))
end

request = function()
  counter = counter + 1
  local body = '{"name": "Bench User", "email": "bench-' .. tag .. '-' .. counter .. '@example.com"}'
  return wrk.format("POST", "/api/auth/sign-up", {["Content-Type"] = "application/json"}, body)
end
