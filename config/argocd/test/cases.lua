-- Fixtures for runner/main.go (test/run.sh): objects as Argo CD hands them to a health script
-- (decoded JSON), with the health each must get. Reasons and messages are the
-- ones the operator writes (operator/src/<kind>/status.rs).
local function cond(type_, status, reason, message, generation)
  return { type = type_, status = status, reason = reason, message = message,
           observedGeneration = generation or 1, lastTransitionTime = "2025-01-01T00:00:00Z" }
end

local function object(kind, generation, status, spec)
  return { apiVersion = "hone.dev/v1alpha1", kind = kind,
           metadata = { name = "x", namespace = "ml", generation = generation },
           spec = spec or {}, status = status }
end

-- The five TrainingJob conditions, all carrying the summary (as the operator sets them).
local function tj_conditions(phase, reason, message)
  local function is(p)
    return phase == p and "True" or "False"
  end
  return {
    cond("Ready", is("Succeeded"), reason, message),
    cond("Running", is("Running"), reason, message),
    cond("Succeeded", is("Succeeded"), reason, message),
    cond("Failed", is("Failed"), reason, message),
    cond("Suspended", is("Suspended"), reason, message),
  }
end
local function tj(phase, reason, message, extra, spec)
  local status = { phase = phase, observedGeneration = 1, message = message,
                   conditions = tj_conditions(phase, reason, message) }
  for k, v in pairs(extra or {}) do
    status[k] = v
  end
  return object("TrainingJob", 1, status, spec)
end

-- The five InferenceService conditions.
local function isvc(phase, c)
  return object("InferenceService", 2, { phase = phase, observedGeneration = 2, conditions = {
    cond("Ready", c.ready[1], c.ready[2], c.ready[3], 2),
    cond("PredictorsReady", c.predictors[1], c.predictors[2], c.predictors[3], 2),
    cond("RouteReady", c.route[1], c.route[2], c.route[3], 2),
    cond("RolloutProgressing", c.rollout[1], c.rollout[2], c.rollout[3], 2),
    cond("Degraded", c.degraded[1], c.degraded[2], c.degraded[3], 2),
  } })
end
local SERVING = { "True", "Serving", "every variant is served and routed" }
local PREDICTORS = { "True", "PredictorsReady", "every variant has ready predictors" }
local ROUTER = { "True", "RouterReady", "router digits-router is serving" }
local NO_ROLLOUT = { "False", "NoRollout", "no rollout in progress" }
local NOT_DEGRADED = { "False", "AsExpected", "no rollout was aborted at this generation" }

local cases = {}
local function case(kind, name, obj, status, message)
  table.insert(cases, { kind = kind, name = name, obj = obj, status = status, message = message })
end

-- Shared by every kind: no status yet, and a status of an older generation.
for _, kind in ipairs({ "Dataset", "TrainingJob", "ModelVersion", "InferenceService" }) do
  case(kind, "no status", object(kind, 1, nil), "Progressing", "Waiting for the Hone operator to report status")
  case(kind, "empty status", object(kind, 1, {}), "Progressing",
    "Waiting for the Hone operator to observe generation 1")
  case(kind, "stale observedGeneration (even when it said Ready)",
    object(kind, 3, { phase = "Ready", observedGeneration = 2,
                      conditions = { cond("Ready", "True", "Verified", "ok", 2) } }),
    "Progressing", "Waiting for the Hone operator to observe generation 3")
end

-- Dataset (operator/src/dataset/status.rs).
for _, kind in ipairs({ "Dataset", "ModelVersion" }) do
  local function with(phase, status, reason, message)
    return object(kind, 1, { phase = phase, observedGeneration = 1,
                             conditions = { cond("Ready", status, reason, message) } })
  end
  if kind == "Dataset" then
    case(kind, "Pending", with("Pending", "False", "Pending", "waiting for the inspect Job to be created"),
      "Progressing", "Pending: waiting for the inspect Job to be created")
    case(kind, "Verifying", with("Verifying", "False", "Verifying", "inspect Job x-inspect is reading every sample"),
      "Progressing", "Verifying: inspect Job x-inspect is reading every sample")
    case(kind, "Ready", with("Ready", "True", "Verified", "1797 samples in 10 classes, digest sha256:ab"),
      "Healthy", "Verified: 1797 samples in 10 classes, digest sha256:ab")
    case(kind, "Ready while re-verifying", with("Ready", "True", "Verified", "verified as sha256:ab; re-verifying in Job x-2"),
      "Healthy", "Verified: verified as sha256:ab; re-verifying in Job x-2")
    for _, reason in ipairs({ "InvalidSpec", "InspectJobFailed", "SummaryMissing", "SummaryUnreadable", "UndecodableImage" }) do
      case(kind, "Failed " .. reason, with("Failed", "False", reason, "the first bad sample: train/3/x.png"),
        "Degraded", reason .. ": the first bad sample: train/3/x.png")
    end
  else
    case(kind, "Pending", with("Pending", "False", "Creating", "creating the verify Job"),
      "Progressing", "Creating: creating the verify Job")
    case(kind, "Verifying", with("Verifying", "False", "Verifying", "Job x-verify is fetching, digesting and loading the artifact"),
      "Progressing", "Verifying: Job x-verify is fetching, digesting and loading the artifact")
    case(kind, "Ready", with("Ready", "True", "Verified", "verified sha256:ab: loaded and ran one forward pass in 3 ms"),
      "Healthy", "Verified: verified sha256:ab: loaded and ran one forward pass in 3 ms")
    for _, reason in ipairs({ "InvalidSpec", "DigestMismatch", "VerifyFailed", "ArtifactNotFound" }) do
      case(kind, "Failed " .. reason, with("Failed", "False", reason, "the artifact cannot be used"),
        "Degraded", reason .. ": the artifact cannot be used")
    end
  end
  case(kind, "InvalidSpec on a previously Ready phase", with("Ready", "False", "InvalidSpec", "spec.x is wrong"),
    "Degraded", "InvalidSpec: spec.x is wrong")
  case(kind, "phase without conditions", object(kind, 1, { phase = "Ready", observedGeneration = 1 }),
    "Healthy", kind .. " verified")
  case(kind, "Failed phase without conditions", object(kind, 1, { phase = "Failed", observedGeneration = 1 }),
    "Degraded", kind .. " verification failed")
end

-- TrainingJob (operator/src/trainingjob/status.rs).
case("TrainingJob", "Pending, creating the Job", tj("Pending", "Creating", "creating the training Job"),
  "Progressing", "creating the training Job")
case("TrainingJob", "Pending, waiting for the Dataset",
  tj("Pending", "DatasetNotReady", "waiting for the Dataset to be Ready: verifying"),
  "Progressing", "waiting for the Dataset to be Ready: verifying")
case("TrainingJob", "Pending, starting pods", tj("Pending", "Starting", "Job x-train is starting its pods"),
  "Progressing", "Job x-train is starting its pods")
case("TrainingJob", "Running", tj("Running", "Training", "Job x-train is training"),
  "Progressing", "Job x-train is training")
case("TrainingJob", "Running, registering", tj("Running", "Registering", "trained 15 epochs; registering the model as a ModelVersion"),
  "Progressing", "trained 15 epochs; registering the model as a ModelVersion")
case("TrainingJob", "Succeeded", tj("Succeeded", "Succeeded", "trained 15 epochs; registered as ModelVersion digits-v1",
    { modelVersion = "digits-v1" }),
  "Healthy", "trained 15 epochs; registered as ModelVersion digits-v1")
for _, reason in ipairs({ "OOMKilled", "DeadlineExceeded", "BackoffLimitExceeded", "ImagePullBackOff",
                          "DatasetNotReady", "TrainerError", "InvalidSpec" }) do
  case("TrainingJob", "Failed " .. reason, tj("Failed", reason, "it went wrong", { failureReason = reason }),
    "Degraded", reason .. ": it went wrong")
end
case("TrainingJob", "Pending but blocked on a Failed Dataset",
  tj("Pending", "DatasetNotReady", "Dataset digits is Failed", { failureReason = "DatasetNotReady" }),
  "Degraded", "DatasetNotReady: Dataset digits is Failed")
case("TrainingJob", "Pending but the image cannot be pulled",
  tj("Pending", "ImagePullBackOff", "cannot pull the trainer image", { failureReason = "ImagePullBackOff" }),
  "Degraded", "ImagePullBackOff: cannot pull the trainer image")
case("TrainingJob", "Suspended by runPolicy",
  tj("Suspended", "Suspended", "Job x-train is suspended (spec.runPolicy.suspend); set it to false to resume", nil,
    { runPolicy = { suspend = true } }),
  "Suspended", "Job x-train is suspended (spec.runPolicy.suspend); set it to false to resume")
case("TrainingJob", "Suspended by Kueue",
  tj("Suspended", "Suspended", "Job x-train is suspended until Kueue admits it from queue team-a"),
  "Suspended", "Job x-train is suspended until Kueue admits it from queue team-a")
case("TrainingJob", "spec.runPolicy.suspend before a Job exists",
  tj("Pending", "DatasetNotReady", "waiting for the Dataset to be Ready: verifying", nil, { runPolicy = { suspend = true } }),
  "Suspended", "Suspended by spec.runPolicy.suspend")
case("TrainingJob", "Succeeded stays Healthy after suspend is set",
  tj("Succeeded", "Succeeded", "trained 15 epochs; registered as ModelVersion digits-v1", nil, { runPolicy = { suspend = true } }),
  "Healthy")
case("TrainingJob", "Failed phase without conditions",
  object("TrainingJob", 1, { phase = "Failed", observedGeneration = 1, failureReason = "OOMKilled" }),
  "Degraded", "Training failed")
case("TrainingJob", "Failed with only status.message",
  object("TrainingJob", 1, { phase = "Failed", observedGeneration = 1, failureReason = "OOMKilled", message = "out of memory" }),
  "Degraded", "OOMKilled: out of memory")

-- InferenceService (operator/src/inferenceservice/status.rs).
case("InferenceService", "Ready", isvc("Ready", { ready = SERVING, predictors = PREDICTORS, route = ROUTER,
  rollout = NO_ROLLOUT, degraded = NOT_DEGRADED }), "Healthy", "Serving: every variant is served and routed")
case("InferenceService", "Pending, predictors starting", isvc("Pending", {
  ready = { "False", "PredictorsStarting", "variant stable has no ready predictor yet" },
  predictors = { "False", "PredictorsStarting", "variant stable has no ready predictor yet" },
  route = { "False", "RouterStarting", "waiting for a ready pod of router digits-router" },
  rollout = NO_ROLLOUT, degraded = NOT_DEGRADED }),
  "Progressing", "PredictorsStarting: variant stable has no ready predictor yet")
case("InferenceService", "Pending, ModelVersion not Ready", isvc("Pending", {
  ready = { "False", "ModelVersionNotReady", "variant stable: ModelVersion digits-v1 is Verifying" },
  predictors = { "False", "ModelVersionNotReady", "variant stable: ModelVersion digits-v1 is Verifying" },
  route = { "False", "NoServableVariant", "no variant has a servable ModelVersion yet" },
  rollout = NO_ROLLOUT, degraded = NOT_DEGRADED }),
  "Progressing", "ModelVersionNotReady: variant stable: ModelVersion digits-v1 is Verifying")
case("InferenceService", "Pending, router starting", isvc("Pending", {
  ready = { "False", "RouterStarting", "waiting for a ready pod of router digits-router" },
  predictors = PREDICTORS,
  route = { "False", "RouterStarting", "waiting for a ready pod of router digits-router" },
  rollout = NO_ROLLOUT, degraded = NOT_DEGRADED }),
  "Progressing", "RouterStarting: waiting for a ready pod of router digits-router")
case("InferenceService", "Progressing canary (Ready=True meanwhile)", isvc("Progressing", {
  ready = SERVING, predictors = PREDICTORS, route = ROUTER,
  rollout = { "True", "CanaryStep", "variant candidate at step 1 of 2: 10% on digits-v2" },
  degraded = NOT_DEGRADED }),
  "Progressing", "CanaryStep: variant candidate at step 1 of 2: 10% on digits-v2")
case("InferenceService", "RolloutAborted", isvc("Degraded", {
  ready = SERVING, predictors = PREDICTORS, route = ROUTER, rollout = NO_ROLLOUT,
  degraded = { "True", "RolloutAborted", "canary digits-v2 error rate 0.2 above 0.01; traffic back on digits-v1" } }),
  "Degraded", "RolloutAborted: canary digits-v2 error rate 0.2 above 0.01; traffic back on digits-v1")
case("InferenceService", "ManualRollback (kubectl hone rollback)", isvc("Degraded", {
  ready = SERVING, predictors = PREDICTORS, route = ROUTER, rollout = NO_ROLLOUT,
  degraded = { "True", "ManualRollback", "rolled back by hand; traffic back on digits-v1" } }),
  "Degraded", "ManualRollback: rolled back by hand; traffic back on digits-v1")
case("InferenceService", "Degraded condition without the phase", isvc("Ready", {
  ready = SERVING, predictors = PREDICTORS, route = ROUTER, rollout = NO_ROLLOUT,
  degraded = { "True", "RolloutAborted", "aborted" } }),
  "Degraded", "RolloutAborted: aborted")
case("InferenceService", "InvalidSpec keeps the old phase", isvc("Ready", {
  ready = { "False", "InvalidSpec", "ModelVersion digits-v9 does not exist" }, predictors = PREDICTORS, route = ROUTER,
  rollout = NO_ROLLOUT, degraded = NOT_DEGRADED }),
  "Degraded", "InvalidSpec: ModelVersion digits-v9 does not exist")
case("InferenceService", "Gateway API not installed", isvc("Pending", {
  ready = { "False", "GatewayAPINotInstalled", "install the Gateway API CRDs or use provider Router" },
  predictors = PREDICTORS,
  route = { "False", "GatewayAPINotInstalled", "install the Gateway API CRDs or use provider Router" },
  rollout = NO_ROLLOUT, degraded = NOT_DEGRADED }),
  "Degraded", "GatewayAPINotInstalled: install the Gateway API CRDs or use provider Router")
case("InferenceService", "HTTPRoute refused by a Gateway", isvc("Pending", {
  ready = { "False", "PredictorsStarting", "variant stable has no ready predictor yet" },
  predictors = { "False", "PredictorsStarting", "variant stable has no ready predictor yet" },
  route = { "False", "RouteNotAccepted", "listener http does not allow this namespace" },
  rollout = NO_ROLLOUT, degraded = NOT_DEGRADED }),
  "Degraded", "RouteNotAccepted: listener http does not allow this namespace")
case("InferenceService", "HTTPRoute pending acceptance", isvc("Pending", {
  ready = { "False", "RoutePending", "waiting for a Gateway controller to accept the HTTPRoute" },
  predictors = PREDICTORS,
  route = { "False", "RoutePending", "waiting for a Gateway controller to accept the HTTPRoute" },
  rollout = NO_ROLLOUT, degraded = NOT_DEGRADED }),
  "Progressing", "RoutePending: waiting for a Gateway controller to accept the HTTPRoute")

return cases
