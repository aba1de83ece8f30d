"""The trainer program: runs in TrainingJob pods, config in, artifact and result out.

Subcommands (see `__main__`): `train` fits, evaluates and writes the artifact; `trial` runs one
cross-validated tuning trial of an Indexed Job; `verify` checks an artifact loads and predicts.
`checks.check_spec` and `tuning.trial_count` / `tuning.trial_params` are pure functions the
operator imports; they never touch data.
"""
