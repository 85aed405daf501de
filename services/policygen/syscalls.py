"""libseccomp's syscall table for policygen: architecture names as SCMP_ARCH_* strings, the
node's architecture and its compat architectures, and name <-> number resolution, so generated
profiles only ever hold names libseccomp (and so runc, crun and the kubelet) can load."""

from __future__ import annotations

import functools

import pyseccomp

# SCMP_ARCH_* name -> libseccomp's architecture token.
_TOKENS: dict[str, int] = {
    "SCMP_ARCH_X86_64": pyseccomp.Arch.X86_64,
    "SCMP_ARCH_X86": pyseccomp.Arch.X86,
    "SCMP_ARCH_X32": pyseccomp.Arch.X32,
    "SCMP_ARCH_AARCH64": pyseccomp.Arch.AARCH64,
    "SCMP_ARCH_ARM": pyseccomp.Arch.ARM,
    "SCMP_ARCH_RISCV64": pyseccomp.Arch.RISCV64,
    "SCMP_ARCH_S390X": pyseccomp.Arch.S390X,
    "SCMP_ARCH_PPC64LE": pyseccomp.Arch.PPC64LE,
}
# The architectures a node of each architecture can run, the native one first; runc and
# containerd list the same compat sets in their default profiles.
COMPAT: dict[str, tuple[str, ...]] = {
    "SCMP_ARCH_X86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "SCMP_ARCH_AARCH64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
    "SCMP_ARCH_X86": ("SCMP_ARCH_X86",),
    "SCMP_ARCH_X32": ("SCMP_ARCH_X32",),
    "SCMP_ARCH_ARM": ("SCMP_ARCH_ARM",),
    "SCMP_ARCH_RISCV64": ("SCMP_ARCH_RISCV64",),
    "SCMP_ARCH_S390X": ("SCMP_ARCH_S390X",),
    "SCMP_ARCH_PPC64LE": ("SCMP_ARCH_PPC64LE",),
}
ARCHITECTURES = tuple(_TOKENS)


class UnknownSyscall(ValueError):
    """A syscall name or number is not in libseccomp's table for the architecture."""


def token(arch: str) -> int:
    """Return libseccomp's token for an SCMP_ARCH_* name."""
    try:
        return _TOKENS[arch]
    except KeyError:
        raise UnknownSyscall(f"unknown architecture {arch!r}") from None


def native_arch() -> str:
    """Return the SCMP_ARCH_* name of this machine's architecture."""
    native = pyseccomp.system_arch()
    for name, value in _TOKENS.items():
        if value == native:
            return name
    raise UnknownSyscall(f"libseccomp reports an unsupported native architecture {native:#x}")


def with_compat(arch: str) -> tuple[str, ...]:
    """Return `arch` followed by the compat architectures its kernel also runs."""
    token(arch)
    return COMPAT[arch]


@functools.lru_cache(maxsize=4096)
def name_of(arch: str, number: int) -> str:
    """Return the name of syscall `number` in `arch`'s table; UnknownSyscall when it has none."""
    try:
        return str(pyseccomp.resolve_syscall(token(arch), number).decode())
    except ValueError:
        raise UnknownSyscall(f"no syscall number {number} on {arch}") from None


@functools.lru_cache(maxsize=4096)
def number_of(arch: str, name: str) -> int:
    """Return the number of syscall `name` in `arch`'s table; UnknownSyscall when it has none."""
    number = int(pyseccomp.resolve_syscall(token(arch), name))
    if number < 0:
        raise UnknownSyscall(f"{name!r} is not a syscall on {arch}")
    return number


def is_known(name: str, arches: tuple[str, ...]) -> bool:
    """Return whether `name` is a syscall on at least one of `arches`."""
    for arch in arches:
        try:
            number_of(arch, name)
        except UnknownSyscall:
            continue
        return True
    return False
