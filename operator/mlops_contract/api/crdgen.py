"""Generate crds/*.yaml from the API models (the single source of truth).

    python -m mlops_contract.api.crdgen [--out crds]   write the CRDs
    python -m mlops_contract.api.crdgen --check        exit 1 if the committed YAML is stale

pydantic emits JSON Schema (draft 2020-12); Kubernetes wants a *structural* OpenAPI v3
schema. The conversion inlines $refs, turns `X | None` into an optional X, drops titles and
`additionalProperties: false` (unknown fields are pruned by the API server, and kubectl's
strict field validation reports them), and converts numeric exclusive bounds to the
OpenAPI 3.0 boolean form.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import yaml
from pydantic import BaseModel

from mlops_contract.api import inferenceservice, modelversion, trainingjob
from mlops_contract.api.common import CATEGORY, GROUP, VERSION

KINDS: Final[list[tuple[ModuleType, type[BaseModel], type[BaseModel]]]] = [
    (trainingjob, trainingjob.TrainingJobSpec, trainingjob.TrainingJobStatus),
    (modelversion, modelversion.ModelVersionSpec, modelversion.ModelVersionStatus),
    (inferenceservice, inferenceservice.InferenceServiceSpec, inferenceservice.InferenceServiceStatus),
]

_DROP: Final = {"title", "$defs", "discriminator"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = _resolve(defs[node["$ref"].split("/")[-1]], defs)
        siblings = {k: _resolve(v, defs) for k, v in node.items() if k != "$ref"}
        merged = {**target, **siblings}
        if "x-kubernetes-validations" in target and "x-kubernetes-validations" in siblings:
            merged["x-kubernetes-validations"] = (
                target["x-kubernetes-validations"] + siblings["x-kubernetes-validations"]
            )
        return merged
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("default", "x") is None:
            del rest["default"]
        if len(options) == 1:
            return _resolve({**options[0], **rest}, defs)
        types = {o.get("type") for o in options}
        if types == {"integer", "string"}:
            return _resolve({**rest, "x-kubernetes-int-or-string": True}, defs)
        raise ValueError(f"cannot express a union in a structural schema: {node}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "additionalProperties" and value is True:
            out["x-kubernetes-preserve-unknown-fields"] = True
            continue
        if key == "properties":
            out[key] = {name: _resolve(sub, defs) for name, sub in value.items()}
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        out[key] = _resolve(value, defs)
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    if "enum" in out and "type" not in out:
        out["type"] = "string" if all(isinstance(v, str) for v in out["enum"]) else "integer"
    if out.get("type") == "object" and "default" in out and out["default"] is None:
        del out["default"]
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="serialization")
    schema = _resolve(raw, raw.get("$defs", {}))
    if model.__doc__:
        schema["description"] = " ".join(model.__doc__.split())
    return schema  # type: ignore[no-any-return]  # _resolve keeps the dict shape


def _check_described(schema: dict[str, Any], path: str, missing: list[str]) -> None:
    for name, sub in schema.get("properties", {}).items():
        if not sub.get("description") and not (path.endswith(".yaml") and name == "metadata"):
            missing.append(f"{path}.{name}")
        _check_described(sub, f"{path}.{name}", missing)
    if isinstance(schema.get("items"), dict):
        _check_described(schema["items"], f"{path}[]", missing)
    if isinstance(schema.get("additionalProperties"), dict):
        _check_described(schema["additionalProperties"], f"{path}{{}}", missing)


def crd(module: ModuleType, spec: type[BaseModel], status: type[BaseModel]) -> dict[str, Any]:
    kind: str = module.KIND
    plural: str = module.PLURAL
    spec_schema = openapi_schema(spec)
    if module.SPEC_VALIDATIONS:
        spec_schema["x-kubernetes-validations"] = [
            *module.SPEC_VALIDATIONS,
            *spec_schema.get("x-kubernetes-validations", []),
        ]
    status_schema = openapi_schema(status)
    root: dict[str, Any] = {
        "type": "object",
        "description": f"{kind} of {GROUP}/{VERSION}. {spec_schema['description']}",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object: mlops.dev/v1alpha1."},
            "kind": {"type": "string", "description": f"Kind of this object: {kind}."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    if module.ROOT_VALIDATIONS:
        root["x-kubernetes-validations"] = list(module.ROOT_VALIDATIONS)
    subresources: dict[str, Any] = {"status": {}}
    if kind == "InferenceService":
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": "mlops-operator",
                "app.kubernetes.io/part-of": "mlops-operator",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": module.SINGULAR,
                "shortNames": list(module.SHORT_NAMES),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": list(module.PRINTER_COLUMNS),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD manifest."""
    return {f"{GROUP}_{module.PLURAL}.yaml": crd(module, spec, status) for module, spec, status in KINDS}


def undescribed_fields() -> list[str]:
    missing: list[str] = []
    for name, manifest in all_crds().items():
        schema = manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        _check_described(schema, name, missing)
    return missing


HEADER: Final = "# Generated by `make crds` (python -m mlops_contract.api.crdgen) from operator/mlops_contract/api. Do not edit.\n"


def render(manifest: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(manifest, sort_keys=False, width=120)


def kustomization(names: list[str]) -> str:
    body = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(names),
    }
    return HEADER + yaml.safe_dump(body, sort_keys=False)


def expected_files() -> dict[str, str]:
    files = {name: render(m) for name, m in all_crds().items()}
    files["kustomization.yaml"] = kustomization([n for n in files])
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="crds", help="output directory (default: crds)")
    parser.add_argument(
        "--check", action="store_true", help="fail if the files in --out differ from the models"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    files = expected_files()
    if args.check:
        stale = [n for n, text in files.items() if not (out / n).exists() or (out / n).read_text() != text]
        extra = sorted(p.name for p in out.glob("*.yaml") if p.name not in files)
        if stale or extra:
            print(f"CRDs in {out}/ are stale: {', '.join(stale + extra)}; run `make crds`", file=sys.stderr)
            return 1
        print(f"CRDs in {out}/ match the API models")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
        print(f"Wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
