"""mlops-operator: a Kubernetes-native MLOps operator.

The package holds the operator (kopf handlers, reconcilers, pure builders) and the code it
shares with the trainer (`mlops_trainer`) and the inference server (`mlops_server`): the API
models (`api`), the artifact format (`artifact`) and the drift statistics (`drift`).
"""

__version__ = "0.1.0"
