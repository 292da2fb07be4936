-- Argo CD health of a hone.dev/InferenceService (the source of truth;
-- hack/gen-kustomize.sh embeds it in config/argocd/argocd-cm.yaml). Healthy
-- when every variant is served and routed (Ready=True) and no rollout is
-- moving traffic; Progressing while predictors start or a rollout runs;
-- Degraded when the operator says so (Degraded=True: reason RolloutAborted
-- after failed analysis, ManualRollback after `kubectl hone rollback`), on an
-- invalid spec, or a route that cannot work without a person (no Gateway API
-- installed, a Gateway refusing the HTTPRoute).
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
local degraded = condition(status, "Degraded")
local route = condition(status, "RouteReady")
local stuck_route = route ~= nil and route.status == "False"
  and (route.reason == "GatewayAPINotInstalled" or route.reason == "RouteNotAccepted")
if (degraded ~= nil and degraded.status == "True") or status.phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = explain(degraded, "InferenceService is Degraded")
elseif ready ~= nil and ready.status == "False" and ready.reason == "InvalidSpec" then
  hs.status = "Degraded"
  hs.message = explain(ready, "InferenceService spec is invalid")
elseif stuck_route then
  hs.status = "Degraded"
  hs.message = explain(route, "InferenceService route is not accepted")
elseif status.phase == "Progressing" then
  hs.status = "Progressing"
  hs.message = explain(condition(status, "RolloutProgressing"), "A rollout is moving traffic")
elseif (ready ~= nil and ready.status == "True") or (ready == nil and status.phase == "Ready") then
  hs.status = "Healthy"
  hs.message = explain(ready, "Every variant is served and routed")
else
  hs.status = "Progressing"
  hs.message = explain(ready, "InferenceService is " .. (status.phase or "Pending"))
end
return hs
