-- Argo CD health of a hone.dev/Dataset (the source of truth; hack/gen-kustomize.sh
-- embeds it in config/argocd/argocd-cm.yaml). Healthy once verified (Ready=True),
-- Degraded when Failed, Progressing while Pending or Verifying.
local function condition(status, type_)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function explain(c, fallback)
  if c == nil or c.message == nil or c.message == "" then
    return fallback
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.message
end

local hs = {}
local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Hone operator to report status"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Hone operator to observe generation " .. generation
  return hs
end

local ready = condition(status, "Ready")
if status.phase == "Failed" or (ready ~= nil and ready.status == "False" and ready.reason == "InvalidSpec") then
  hs.status = "Degraded"
  hs.message = explain(ready, "Dataset verification failed")
elseif (ready ~= nil and ready.status == "True") or (ready == nil and status.phase == "Ready") then
  hs.status = "Healthy"
  hs.message = explain(ready, "Dataset verified")
else
  hs.status = "Progressing"
  hs.message = explain(ready, "Dataset is " .. (status.phase or "Pending"))
end
return hs
