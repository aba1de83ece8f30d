"""The one JSON log schema: kopf's per-object extras become one readable `object` field."""

from __future__ import annotations

import logging

import orjson

from mlops_contract.logs import JsonFormatter


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "kopf.objects", logging.WARNING, __file__, 1, "Handler %r failed", ("x",), None
    )
    record.__dict__.update(extra)
    return record


def test_kopf_settings_and_flags_are_dropped_and_the_object_is_named() -> None:
    line = JsonFormatter().format(
        _record(
            settings=object(),
            k8s_skip=True,
            k8s_ref={"apiVersion": "batch/v1", "kind": "Job", "name": "j", "namespace": "ns", "uid": "u"},
        )
    )
    doc = orjson.loads(line)
    assert doc["message"] == "Handler 'x' failed"
    assert doc["object"] == "Job/ns/j"
    assert not {"settings", "k8s_skip", "k8s_ref"} & doc.keys()


def test_cluster_scoped_objects_and_own_extras() -> None:
    doc = orjson.loads(
        JsonFormatter().format(_record(k8s_ref={"kind": "Node", "name": "n1"}, reason="Ready"))
    )
    assert doc["object"] == "Node/n1"
    assert doc["reason"] == "Ready"


def test_an_explicit_object_extra_wins() -> None:
    doc = orjson.loads(
        JsonFormatter().format(_record(object="TrainingJob/a/b", k8s_ref={"kind": "Job", "name": "c"}))
    )
    assert doc["object"] == "TrainingJob/a/b"
