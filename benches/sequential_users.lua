-- wrk script for `make bench`: each request is from the next user in BENCH_TOKENS, so every
-- request needs a new exchange. With BENCH_STOP_AT_END set, a thread stops once the list is done.
local tokens = {}
local next_index = 1
local stop_at_end = os.getenv("BENCH_STOP_AT_END") ~= nil

init = function(args)
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    tokens[#tokens + 1] = line
  end
end

request = function()
  local token = tokens[next_index]
  next_index = next_index + 1
  if next_index > #tokens then
    next_index = 1
  end
  return wrk.format("GET", "/", { ["Host"] = "api.example.com", ["Authorization"] = "Bearer " .. token })
end

local answered = 0
response = function(status, headers, body)
  answered = answered + 1
  if stop_at_end and answered >= #tokens then
    wrk.thread:stop()
  end
end
