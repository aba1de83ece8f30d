"""The contract between the three programs: the operator, the trainer and the inference server.

Each program imports this package and never another program (an import-linter contract in
pyproject.toml). What lives here is what two programs must agree on:

- `api`: the resource models (the single source of truth of the CRDs) and `checks`, the spec
  checks the operator runs before launch and the trainer runs again;
- `estimators`: the allow-list of scikit-learn estimators, their parameters and metrics;
- `artifact` (the model file format), `arrayplan` (the array runtime read from it), `drift`
  (the reference statistics the trainer writes and the server compares with);
- `storage`: URIs and transfers (pvc://, s3://, https://);
- `logs` and `timeutil`: one JSON log schema and one pair of time helpers.

It imports no Kubernetes client and no kopf; heavy libraries (numpy, scikit-learn, skops) only
inside the modules that need them, so the operator can use the API models without them.
"""
