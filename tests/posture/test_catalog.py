"""The control catalog tested as data: ids, mappings, remediation, runtime, and test coverage."""

from __future__ import annotations

import re

import pytest

from services.posture.domain import Control, InvalidArgument, RuntimeEvidenceKind
from services.posture.rules import CONTROLS, FRAMEWORKS, select_controls
from tests.posture.test_rules_network import NETWORK_CASES
from tests.posture.test_rules_rbac import RBAC_CASES
from tests.posture.test_rules_workload import WORKLOAD_CASES

ID = re.compile(r"^(CTR|POD|SA|SEC|IMG|RES|REL|RBAC|NET|NS|MISC)-\d{2}$")


def test_catalog_size_and_unique_ids() -> None:
    ids = [c.id for c in CONTROLS]
    assert len(ids) >= 70
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


@pytest.mark.parametrize("control", CONTROLS, ids=[c.id for c in CONTROLS])
def test_control_is_complete(control: Control) -> None:
    assert ID.match(control.id)
    assert control.kubescape_ids or control.checkov_ids or control.no_mapping_reason
    assert all(re.fullmatch(r"C-\d{4}", k) for k in control.kubescape_ids)
    assert all(re.fullmatch(r"CKV2?_K8S_\d+", k) for k in control.checkov_ids)
    assert control.remediation and control.description and control.name and control.category
    assert isinstance(control.runtime.kind, RuntimeEvidenceKind) and control.runtime.description


def test_every_control_has_a_table_case() -> None:
    cases = {c.control for c in (*WORKLOAD_CASES, *RBAC_CASES, *NETWORK_CASES)}
    assert cases == {c.id for c in CONTROLS}


def test_framework_selection() -> None:
    cis = select_controls(["CIS"])
    assert cis and all(any(f.startswith("CIS ") for f in c.frameworks) for c in cis)
    assert {"nsa", "mitre", "cis"} <= FRAMEWORKS
    assert "CTR-01" in {c.id for c in select_controls(["nsa"])}
    with pytest.raises(InvalidArgument):
        select_controls(["no-such-framework"])
