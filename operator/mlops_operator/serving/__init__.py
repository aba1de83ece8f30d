"""Pure serving decisions for the InferenceService reconcile: which ModelVersion to serve
(`resolve`) and what to do with a canary under analysis (`canary`). No I/O, kopf, client or clock:
the caller passes the ModelVersion bodies, the observed statistics and `now`.
"""
