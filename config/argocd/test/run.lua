-- Runs the Argo CD health checks in config/argocd/health/*.lua against the
-- fixtures in cases.lua, the way Argo CD does: the script is a chunk with the
-- object as the global `obj` (JSON decoded to Lua tables; absent fields are
-- nil) and must return a table with `status` and `message`. Also checks that
-- config/argocd/argocd-cm.yaml embeds every script byte for byte.
-- Usage: lua5.1 run.lua <config/argocd directory>
-- Prints one line per check, then exactly "N passed, N failed"; exits 1 on any failure.
local dir = arg[1] or "."
local KINDS = { "Dataset", "TrainingJob", "ModelVersion", "InferenceService" }
-- Argo CD's health statuses.
local STATUSES = { Healthy = true, Progressing = true, Degraded = true, Suspended = true, Missing = true, Unknown = true }

local passed, failed = 0, 0
local function ok(name)
  passed = passed + 1
  print("ok     " .. name)
end
local function fail(name, why)
  failed = failed + 1
  print("FAILED " .. name .. ": " .. why)
end

local function read(path)
  local f, err = io.open(path, "rb")
  if f == nil then
    return nil, err
  end
  local text = f:read("*a")
  f:close()
  return text
end

-- The literal block scalars `  <key>: |` under `data:` of a ConfigMap YAML,
-- with clip chomping (one final newline): enough YAML for the generator's output.
local function block_scalars(text)
  local blocks, order = {}, {}
  local key, indent, lines = nil, nil, nil
  local function close()
    if key ~= nil then
      while #lines > 0 and lines[#lines] == "" do
        table.remove(lines)
      end
      blocks[key] = table.concat(lines, "\n") .. "\n"
      key = nil
    end
  end
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local k = line:match("^  ([%w%._%-/]+): |%s*$")
    if k ~= nil then
      close()
      key, indent, lines = k, nil, {}
      table.insert(order, k)
    elseif key ~= nil then
      if line:match("^%s*$") then
        table.insert(lines, "")
      else
        if indent == nil then
          indent = #line:match("^( *)")
        end
        if #line:match("^( *)") < indent then
          close()
        else
          table.insert(lines, line:sub(indent + 1))
        end
      end
    end
  end
  close()
  return blocks, order
end

-- Argo CD's Lua VM opens base, table, string and math (no io, os, require).
local function sandbox(object)
  local env = {
    obj = object,
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
    select = select, tonumber = tonumber, tostring = tostring, type = type, unpack = unpack,
    string = string, table = table, math = math,
  }
  -- A typo in a script reads a global that does not exist: fail loudly.
  return setmetatable(env, {
    __index = function(_, name)
      error("undefined global '" .. tostring(name) .. "'", 2)
    end,
  })
end

local function deep_copy(v)
  if type(v) ~= "table" then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    out[k] = deep_copy(x)
  end
  return out
end

local function evaluate(source, chunk_name, object)
  local chunk, err = loadstring(source, chunk_name)
  if chunk == nil then
    return nil, "does not compile: " .. err
  end
  setfenv(chunk, sandbox(deep_copy(object)))
  local good, result = pcall(chunk)
  if not good then
    return nil, "raised: " .. tostring(result)
  end
  if type(result) ~= "table" then
    return nil, "returned " .. type(result) .. ", not a table"
  end
  if not STATUSES[result.status] then
    return nil, "returned status " .. tostring(result.status) .. ", not an Argo CD health status"
  end
  if type(result.message) ~= "string" or result.message == "" then
    return nil, "returned no message"
  end
  return result
end

-- 1. The scripts, and their copies in argocd-cm.yaml.
local scripts = {}
local cm, cm_err = read(dir .. "/argocd-cm.yaml")
local embedded = cm and block_scalars(cm) or {}
if cm == nil then
  fail("argocd-cm.yaml", "cannot read: " .. tostring(cm_err))
end
for _, kind in ipairs(KINDS) do
  local path = dir .. "/health/" .. kind .. ".lua"
  local source, err = read(path)
  if source == nil then
    fail(kind .. ".lua", "cannot read: " .. tostring(err))
  else
    scripts[kind] = source
    local key = "resource.customizations.health.hone.dev_" .. kind
    if cm ~= nil then
      if embedded[key] == nil then
        fail(key, "missing from argocd-cm.yaml: run hack/gen-kustomize.sh")
      elseif embedded[key] ~= source then
        fail(key, "differs from health/" .. kind .. ".lua: run hack/gen-kustomize.sh")
      else
        ok(key .. " embeds health/" .. kind .. ".lua")
      end
    end
  end
end

-- 2. Every fixture through its kind's script.
local cases = dofile(dir .. "/test/cases.lua")
local covered = {}
for _, case in ipairs(cases) do
  local name = case.kind .. ": " .. case.name
  local source = scripts[case.kind]
  if source == nil then
    fail(name, "no health script for kind " .. tostring(case.kind))
  else
    covered[case.kind] = (covered[case.kind] or 0) + 1
    local result, err = evaluate(source, "@" .. case.kind .. ".lua", case.obj)
    if result == nil then
      fail(name, err)
    elseif result.status ~= case.status then
      fail(name, "status " .. result.status .. " (" .. result.message .. "), want " .. case.status)
    elseif case.message ~= nil and result.message ~= case.message then
      fail(name, "message '" .. result.message .. "', want '" .. case.message .. "'")
    else
      ok(name .. " -> " .. result.status)
    end
  end
end
for _, kind in ipairs(KINDS) do
  if (covered[kind] or 0) == 0 then
    fail(kind, "no fixtures in cases.lua")
  end
end

print(passed .. " passed, " .. failed .. " failed")
os.exit(failed == 0 and 0 or 1)
