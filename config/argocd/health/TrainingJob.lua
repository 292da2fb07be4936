-- Argo CD health of a hone.dev/TrainingJob (the source of truth; hack/gen-kustomize.sh
-- embeds it in config/argocd/argocd-cm.yaml). Like a batch Job: Healthy once
-- Succeeded (the model is registered), Degraded when Failed or blocked on
-- something a person has to fix (status.failureReason while Pending: a missing
-- or Failed Dataset, an image that cannot be pulled), Suspended while
-- spec.runPolicy.suspend (or Kueue) holds it, Progressing otherwise.
local function condition(status, type_)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function is_true(status, type_)
  local c = condition(status, type_)
  return c ~= nil and c.status == "True"
end

local function explain(reason, message, fallback)
  if message == nil or message == "" then
    return fallback
  end
  if reason ~= nil and reason ~= "" then
    return reason .. ": " .. message
  end
  return message
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

local spec = obj.spec or {}
local run_policy = spec.runPolicy or {}
-- Every condition carries the summary's message; status.message is the same
-- sentence, kept as a fallback.
local function said(type_, fallback)
  local c = condition(status, type_)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return status.message or fallback
end
if status.phase == "Failed" or is_true(status, "Failed") then
  local failed = condition(status, "Failed") or {}
  hs.status = "Degraded"
  hs.message = explain(status.failureReason or failed.reason, said("Failed", nil), "Training failed")
elseif status.phase == "Succeeded" or is_true(status, "Succeeded") then
  hs.status = "Healthy"
  hs.message = said("Succeeded", "Training succeeded")
elseif status.phase == "Suspended" or is_true(status, "Suspended") then
  hs.status = "Suspended"
  hs.message = said("Suspended", "Suspended")
elseif run_policy.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended by spec.runPolicy.suspend"
elseif status.failureReason ~= nil then
  hs.status = "Degraded"
  hs.message = explain(status.failureReason, said("Ready", nil), "Training is blocked")
else
  hs.status = "Progressing"
  hs.message = said("Ready", "Training is " .. (status.phase or "Pending"))
end
return hs
