"""`parallax seccomp`, `parallax netpol` and `parallax harden`: policies generated from a
workload's runtime profile (fetched from the runtime service, or a Profile JSON file with
--profile) by the policygen service (--policygen ADDR) or in-process when a file is given, and
verification (`parallax seccomp verify PROFILE -- CMD...`, `parallax netpol verify POLICIES`).
Output goes to stdout and applies as-is; notes, lint and readiness go to stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from parallax.policygen.v1 import network_policy_pb2 as np_pb
from parallax.policygen.v1 import policygen_service_pb2 as pb
from parallax.policygen.v1 import policygen_service_pb2_grpc as pb_grpc
from parallax.policygen.v1 import seccomp_pb2
from parallax.runtime.v1 import profile_pb2
from parallax.type.v1 import source_pb2, workload_pb2
from rich.console import Console

from cli.connection import InsecureOption, RuntimeOption, TlsDirOption, channel, material
from servicekit.errors import ConfigError, DomainError
from servicekit.tls import TlsMaterial
from services.policygen.runtime_client import RuntimeProfiles
from services.policygen.servicer import PolicygenServicer

console = Console(stderr=True, markup=False, highlight=False)
TIMEOUT = 120.0
EXIT_FAILED, EXIT_USAGE = 1, 2
POLICYGEN = typer.Option(
    "",
    "--policygen",
    help="Policygen service address (default 127.0.0.1:50053; in-process with --profile).",
)
PROFILE = typer.Option(
    None, "--profile", help="A runtime Profile as JSON instead of the runtime service."
)
OBJECTS = typer.Option(
    [], "--objects", help="Kubernetes manifests (pods, services, namespaces, ...)."
)
COMMAND = {"context_settings": {"allow_extra_args": True, "ignore_unknown_options": True}}


class Services(NamedTuple):
    """Where a command's profile and policies come from, and how to connect to them."""

    runtime: str
    policygen: str
    tls_dir: Path | None
    insecure: bool


def _usage(message: str) -> NoReturn:
    console.print(f"error: {message}")
    raise typer.Exit(EXIT_USAGE)


def workload_ref(text: str) -> workload_pb2.WorkloadRef:
    """Parse NAMESPACE/KIND/NAME(/CONTAINER)."""
    parts = text.split("/")
    if len(parts) not in (3, 4) or not all(parts):
        _usage(f"WORKLOAD must be NAMESPACE/KIND/NAME(/CONTAINER), got {text!r}")
    return workload_pb2.WorkloadRef(
        namespace=parts[0], kind=parts[1], name=parts[2], container=(parts[3:] or [""])[0]
    )


def _profile(path: Path | None) -> list[profile_pb2.Profile]:
    if path is None:
        return []
    try:
        return [json_format.Parse(path.read_text(), profile_pb2.Profile())]
    except (OSError, json_format.ParseError) as exc:
        _usage(f"--profile {path}: {exc}")


def _manifests(paths: list[Path]) -> list[source_pb2.Manifest]:
    try:
        return [source_pb2.Manifest(uri=str(p), content=p.read_bytes()) for p in paths]
    except OSError as exc:
        _usage(str(exc))


def _call(method: str, request: Any, services: Services, local: bool) -> Any:
    """Call `method` on the policygen service, or in-process when `local` and no address."""
    try:
        # Credentials as every client command resolves them: --tls-dir, PARALLAX_TLS_DIR,
        # DATA/tls/cli, or plaintext only with --insecure or PARALLAX_INSECURE=true.
        if local and not services.policygen:
            # In-process: the runtime is dialled only for a profile not given with --profile.
            profiles = RuntimeProfiles(services.runtime, _client_tls(services, required=False))
            return getattr(PolicygenServicer(profiles.get, profiles.list), method)(request, None)
        tls = _client_tls(services, required=True)
        with channel(services.policygen or "127.0.0.1:50053", tls, timeout=TIMEOUT) as opened:
            return getattr(pb_grpc.PolicygenServiceStub(opened), method)(request, timeout=TIMEOUT)
    except (DomainError, ConfigError) as exc:
        _usage(str(exc))
    except grpc.RpcError as exc:
        _usage(f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.Call) else str(exc))


def _client_tls(services: Services, *, required: bool) -> TlsMaterial | None:
    """Client credentials as every command resolves them (--tls-dir, PARALLAX_TLS_DIR,
    DATA/tls/cli, or plaintext with --insecure or PARALLAX_INSECURE=true); when not `required`,
    none found means plaintext."""
    try:
        return material(services.tls_dir, services.insecure)
    except ConfigError:
        if required:
            raise
        return None


def state_name(state: int) -> str:
    """Return a readiness state's short name."""
    from parallax.policygen.v1 import readiness_pb2

    return readiness_pb2.PolicyReadinessState.Name(state).removeprefix("POLICY_READINESS_STATE_")  # type: ignore[arg-type]


def seccomp(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="NAMESPACE/KIND/NAME/CONTAINER, or `verify`."),
    output_format: str = typer.Option("oci", "--format", help="oci or spo."),
    audit: bool = typer.Option(
        False, "--audit", help="Audit variant (defaultAction SCMP_ACT_LOG)."
    ),
    runtime_base: bool = typer.Option(
        False, "--runtime-base", help="Add the container runtime's start-up syscalls."
    ),
    timeout: float = typer.Option(
        30.0, "--timeout", help="verify: seconds before the command is killed."
    ),
    profile: Path | None = PROFILE,
    runtime: str = RuntimeOption,
    policygen: str = POLICYGEN,
    tls_dir: Path | None = TlsDirOption,
    insecure: bool = InsecureOption,
) -> None:
    """Generate a seccomp profile for WORKLOAD, or `seccomp verify PROFILE -- CMD...`."""
    services = Services(runtime, policygen, tls_dir, insecure)
    if target == "verify":
        _verify_seccomp(list(ctx.args), timeout, services)
        return
    if output_format not in ("oci", "spo"):
        _usage("--format must be oci or spo")
    wanted = (
        seccomp_pb2.SECCOMP_PROFILE_FORMAT_OCI_JSON
        if output_format == "oci"
        else seccomp_pb2.SECCOMP_PROFILE_FORMAT_SPO
    )
    request = pb.GenerateSeccompProfileRequest(
        formats=[wanted], audit=audit, include_runtime_base_profile=runtime_base
    )
    ref, profiles = workload_ref(target), _profile(profile)
    if profiles:
        request.profile.CopyFrom(profiles[0])
    else:
        request.workload.CopyFrom(ref)
    result = _call("GenerateSeccompProfile", request, services, bool(profiles)).seccomp_profile
    typer.echo(result.oci_json if output_format == "oci" else result.spo_yaml, nl=False)
    for finding in result.lint_findings:
        console.print(f"lint: {finding.syscall_name}: {finding.reason}")
    verdict = result.runtime_default
    console.print(f"RuntimeDefault safe: {'yes' if verdict.safe else 'no'}: {verdict.reason}")
    console.print(f"readiness: {state_name(result.readiness_state)}: {result.readiness_reason}")


def _verify_seccomp(args: list[str], timeout: float, services: Services) -> None:
    if len(args) < 2:
        _usage("usage: parallax seccomp verify PROFILE -- CMD [ARGS...]")
    try:
        text = Path(args[0]).read_text()
    except OSError as exc:
        _usage(str(exc))
    request = pb.VerifySeccompProfileRequest(
        profile_json=text,
        argv=args[1:],
        timeout=Duration(seconds=int(timeout), nanos=int(timeout % 1 * 1e9)),
    )
    result = _call("VerifySeccompProfile", request, services, True).verification
    typer.echo(
        f"exit status: {result.exit_status}"
        + (f" (signal {result.signal})" if result.signal else "")
    )
    for denied in result.denied_syscalls:
        typer.echo(
            f"denied: {denied.syscall_name} (nr {denied.syscall_number}) "
            f"by {denied.executable} x{denied.count}"
        )
    control = result.negative_control
    typer.echo(
        f"negative control: {control.syscall_name} "
        + ("refused" if control.refused else "NOT refused")
    )
    typer.echo("PASSED" if result.passed else f"FAILED: {result.failure_reason}")
    raise typer.Exit(0 if result.passed else EXIT_FAILED)


def netpol(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="NAMESPACE/KIND/NAME, or `verify` POLICIES."),
    output_format: str = typer.Option("k8s", "--format", help="k8s or cilium."),
    objects: list[Path] = OBJECTS,
    include_existing: bool = typer.Option(
        False, "--include-existing", help="verify: existing policies add up."
    ),
    workload: str = typer.Option(
        "", "--workload", help="verify: the workload whose observed flows must pass."
    ),
    profile: Path | None = PROFILE,
    runtime: str = RuntimeOption,
    policygen: str = POLICYGEN,
    tls_dir: Path | None = TlsDirOption,
    insecure: bool = InsecureOption,
) -> None:
    """Generate a NetworkPolicy for WORKLOAD, or `netpol verify POLICIES --workload W`."""
    services = Services(runtime, policygen, tls_dir, insecure)
    if target == "verify":
        _verify_netpol(list(ctx.args), workload, objects, include_existing, profile, services)
        return
    if output_format not in ("k8s", "cilium"):
        _usage("--format must be k8s or cilium")
    kind = (
        np_pb.NETWORK_POLICY_FORMAT_CILIUM
        if output_format == "cilium"
        else np_pb.NETWORK_POLICY_FORMAT_KUBERNETES
    )
    profiles = _profile(profile)
    request = pb.GenerateNetworkPolicyRequest(
        workload=workload_ref(target), format=kind, profiles=profiles, objects=_manifests(objects)
    )
    result = _call("GenerateNetworkPolicy", request, services, bool(profiles)).network_policy
    typer.echo(result.policy_yaml, nl=False)
    for entry in result.dns_entries:
        console.print(f"dns: {entry.dns_name} -> {', '.join(entry.addresses)}")
    for note in result.notes:
        console.print(f"note: {note.message}")
    console.print(f"readiness: {state_name(result.readiness_state)}: {result.readiness_reason}")


def _verify_netpol(
    args: list[str],
    workload: str,
    objects: list[Path],
    include_existing: bool,
    profile: Path | None,
    services: Services,
) -> None:
    if len(args) != 1 or not workload:
        _usage(
            "usage: parallax netpol verify POLICIES --workload NAMESPACE/KIND/NAME "
            "--objects FILE..."
        )
    ref = workload_ref(workload)
    manifests = _manifests(objects)
    profiles = _profile(profile)
    try:
        policies = Path(args[0]).read_text()
    except OSError as exc:
        _usage(str(exc))
    flows: list[np_pb.Flow] = []
    if profiles:
        generate = pb.GenerateNetworkPolicyRequest(
            workload=ref, profiles=profiles, objects=manifests
        )
        flows = list(_call("GenerateNetworkPolicy", generate, services, True).network_policy.flows)
    request = pb.VerifyNetworkPolicyRequest(
        policies_yaml=policies,
        flows=flows,
        workload=ref,
        objects=manifests,
        include_existing_policies=include_existing,
    )
    result = _call("VerifyNetworkPolicy", request, services, bool(profiles)).verification
    for verdict in result.flow_verdicts:
        flow = verdict.flow
        source, destination = flow.source.address, flow.destination.address
        ends = f"{source or 'workload'} -> {destination or 'workload'}:{flow.port}"
        typer.echo(f"{'allowed' if verdict.allowed else 'DENIED '}  {ends}  {verdict.reason}")
    for extra in result.extra_allowances:
        typer.echo(f"also allowed by {extra.policy}: {extra.peer} on {extra.ports}")
    if result.existing_diff:
        typer.echo(result.existing_diff, nl=False)
    typer.echo("PASSED" if result.passed else "FAILED: some observed flows are denied")
    raise typer.Exit(0 if result.passed else EXIT_FAILED)


def harden(
    target: str = typer.Argument(..., help="NAMESPACE/KIND/NAME."),
    objects: list[Path] = OBJECTS,
    seccomp_profile: str = typer.Option(
        "", "--seccomp-profile", help="localhostProfile to point at."
    ),
    profile: Path | None = PROFILE,
    runtime: str = RuntimeOption,
    policygen: str = POLICYGEN,
    tls_dir: Path | None = TlsDirOption,
    insecure: bool = InsecureOption,
) -> None:
    """Print a strategic-merge patch hardening WORKLOAD's securityContext from evidence."""
    profiles = _profile(profile)
    request = pb.GenerateHardeningRequest(
        workload=workload_ref(target),
        profiles=profiles,
        objects=_manifests(objects),
        seccomp_localhost_profile=seccomp_profile,
    )
    services = Services(runtime, policygen, tls_dir, insecure)
    result = _call("GenerateHardening", request, services, bool(profiles)).hardening_patch
    typer.echo(result.patch_yaml, nl=False)
    for skipped in result.skipped_changes:
        console.print(f"skipped {skipped.field_path}: {skipped.reason}")
    console.print(f"readiness: {state_name(result.readiness_state)}: {result.readiness_reason}")


def register(app: typer.Typer) -> None:
    """Add the policy commands to the `parallax` app."""
    app.command(**COMMAND)(seccomp)  # type: ignore[arg-type]
    app.command(**COMMAND)(netpol)  # type: ignore[arg-type]
    app.command()(harden)
