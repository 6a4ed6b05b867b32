-- wrk script for `make bench`: each request is from the next user in BENCH_TOKENS, so every
-- request needs a new exchange.
local tokens = {}
local next_index = 1

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
