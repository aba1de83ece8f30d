"""The trainer program: runs in TrainingJob pods, config in, artifact and result out.

Subcommands (see `__main__`): `train` fits, evaluates and writes the artifact; `trial` runs one
cross-validated tuning trial of an Indexed Job; `verify` checks an artifact loads and predicts.
`checks.check_spec` is a pure function the operator imports (with
`mlops_contract.api.trainingjob.trial_count`, which `tuning` re-exports); it never touches data
and never imports scikit-learn, so the operator process stays free of it.
"""
