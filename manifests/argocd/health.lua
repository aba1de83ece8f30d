-- Argo CD health check for the mlops.dev kinds (TrainingJob, ModelVersion, InferenceService).
-- Reads the kstatus conditions the operator writes (Ready, Reconciling, Stalled, each with
-- observedGeneration) and the phase. Lua 5.1 (Argo CD's gopher-lua). Installed into argocd-cm
-- by manifests/argocd (kustomization.yaml); tested by tests/unit/argocd/test_health_lua.py.
local hs = {status = "Progressing", message = "Waiting for the operator to report status"}
if obj.status == nil then
  return hs
end
local status = obj.status
local generation = obj.metadata and obj.metadata.generation or nil
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conds = {}
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    -- A condition computed from an older spec says nothing about this one.
    if c.observedGeneration == nil or generation == nil or c.observedGeneration >= generation then
      conds[c.type] = c
    end
  end
end
local function is_true(t)
  return conds[t] ~= nil and conds[t].status == "True"
end
local function msg(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  return fallback
end

if is_true("Stalled") then
  hs.status = "Degraded"
  hs.message = msg(conds["Stalled"], "Stalled")
  return hs
end
if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = msg(conds["Ready"], "Failed")
  return hs
end
if is_true("Ready") then
  hs.status = "Healthy"
  hs.message = msg(conds["Ready"], status.phase or "Ready")
  return hs
end
-- A served version waiting for a human's approval (promotion: manual) is Suspended, not stuck.
local resolved = conds["VersionResolved"]
if resolved ~= nil and resolved.reason == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = msg(resolved, "Awaiting approval")
  return hs
end
hs.message = msg(conds["Reconciling"], msg(conds["Ready"], status.phase or "Reconciling"))
return hs
