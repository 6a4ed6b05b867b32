-- wrk script for `make soak`: every request is from one of many users, picked at random, and
-- says which one in x-user so the upstream can check it got that user's own OBO token. At the end
-- it prints how many answers had each status.
local tokens = {}
local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

init = function(args)
  for line in io.lines(os.getenv("SOAK_TOKENS")) do
    tokens[#tokens + 1] = line
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  statuses = {}
end

request = function()
  local i = math.random(#tokens)
  return wrk.format("GET", "/soak", {
    ["Host"] = "api.example.com",
    ["Authorization"] = "Bearer " .. tokens[i],
    ["x-user"] = tostring(i),
  })
end

response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
  end
  local line = "statuses:"
  for status, n in pairs(total) do
    line = line .. " " .. status .. "=" .. n
  end
  print(line)
end
