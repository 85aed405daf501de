"""Offline structural schemas (a JSON-Schema subset: type, properties, required, items, enum,
minItems, additionalProperties false) of the objects policygen emits: networking.k8s.io/v1
NetworkPolicy, security-profiles-operator.x-k8s.io/v1 SeccompProfile and the OCI seccomp JSON,
written from their API references, with a small validator."""

from __future__ import annotations

from typing import Any

ACTIONS = [
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
]  # fmt: skip
ARCHES = [
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
]
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": STRINGS,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
PEER = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "podSelector": SELECTOR,
        "namespaceSelector": SELECTOR,
        "ipBlock": {
            "type": "object",
            "required": ["cidr"],
            "additionalProperties": False,
            "properties": {
                "cidr": {"type": "string"},
                "except": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
}
PORT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
        "port": {"type": ["integer", "string"]},
        "endPort": {"type": "integer"},
    },
}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": STRINGS,
        "annotations": STRINGS,
    },
}


def _rule(key: str) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            key: {"type": "array", "items": PEER},
            "ports": {"type": "array", "items": PORT},
        },
    }


NETWORK_POLICY = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"enum": ["networking.k8s.io/v1"]},
        "kind": {"enum": ["NetworkPolicy"]},
        "metadata": {**METADATA, "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "required": ["podSelector"],
            "additionalProperties": False,
            "properties": {
                "podSelector": SELECTOR,
                "policyTypes": {"type": "array", "items": {"enum": ["Ingress", "Egress"]}},
                "ingress": {"type": "array", "items": _rule("from")},
                "egress": {"type": "array", "items": _rule("to")},
            },
        },
    },
}
SYSCALL_RULE = {
    "type": "object",
    "required": ["names", "action"],
    "additionalProperties": False,
    "properties": {
        "names": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "action": {"enum": ACTIONS},
        "errnoRet": {"type": "integer"},
        "args": {"type": "array"},
    },
}
OCI_SECCOMP = {
    "type": "object",
    "required": ["defaultAction"],
    "additionalProperties": False,
    "properties": {
        "defaultAction": {"enum": ACTIONS},
        "defaultErrnoRet": {"type": "integer"},
        "architectures": {"type": "array", "items": {"enum": ARCHES}},
        "syscalls": {"type": "array", "items": SYSCALL_RULE},
        "flags": {"type": "array"},
        "listenerPath": {"type": "string"},
        "listenerMetadata": {"type": "string"},
    },
}
SPO_SECCOMP = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"enum": ["security-profiles-operator.x-k8s.io/v1"]},
        "kind": {"enum": ["SeccompProfile"]},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["defaultAction"],
            "additionalProperties": False,
            "properties": {
                "defaultAction": {"enum": ACTIONS},
                "architectures": {"type": "array", "items": {"enum": ARCHES}},
                "syscalls": {"type": "array", "items": SYSCALL_RULE},
                "baseProfileName": {"type": "string"},
                "flags": {"type": "array"},
                "listenerPath": {"type": "string"},
                "listenerMetadata": {"type": "string"},
            },
        },
    },
}
_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool}


def errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Return the schema violations of `value`, each with its path."""
    found: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} not in {schema['enum']}"]
    kinds = schema.get("type")
    if kinds:
        names = kinds if isinstance(kinds, list) else [kinds]
        if not any(
            isinstance(value, _TYPES[n]) and not (n == "integer" and isinstance(value, bool))
            for n in names
        ):
            return [f"{path}: expected {kinds}, got {type(value).__name__}"]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        found += [f"{path}: missing {k}" for k in schema.get("required", []) if k not in value]
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                found += errors(item, props[key], f"{path}.{key}")
            elif extra is False:
                found.append(f"{path}: unknown field {key}")
            elif isinstance(extra, dict):
                found += errors(item, extra, f"{path}.{key}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            found.append(f"{path}: fewer than {schema['minItems']} items")
        for index, item in enumerate(value):
            found += errors(item, schema.get("items", {}), f"{path}[{index}]")
    return found
