"""Pure monitoring and retraining logic for the InferenceService reconcile.

- `scrape`: Prometheus text from the serving pods -> per-pod samples -> aggregated status metrics.
- `triggers`: metrics, annotations and bookkeeping -> whether to create a retraining TrainingJob.
- `cron`: a small 5-field UTC cron parser for the schedule trigger.

No I/O, kopf, client or clock: the caller fetches `/metrics`, passes `now` and persists the state.
"""
