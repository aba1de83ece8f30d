"""The API of mlops.dev/v1alpha1: typed models that are the single source of truth.

The pydantic models here define every field once (type, bounds, default, description, CEL
rules); `crdgen` turns them into the CRD YAML under crds/, and the operator, trainer and
server parse resources with the same models.
"""

from mlops_contract.api.common import API_VERSION, GROUP, VERSION

__all__ = ["API_VERSION", "GROUP", "VERSION"]
