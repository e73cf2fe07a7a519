"""What the agent's service may read its orders from and run: only what administrators control.

The service runs as root on macOS, as LocalSystem on Windows and as a dynamic user without
capabilities on Linux (its SMART helper holds the two smartctl needs). A config file, secret file
or tool binary that any other local user can modify would let that user choose what runs with the
service's privileges and where the fleet's data goes, so such paths are refused.

POSIX: the file and every folder above it (of the path as given and as resolved through
symlinks) must be owned by root or by the agent's own account, and not writable by group (unless
the group is root's) or others; a world-writable folder with the sticky bit (``/tmp``) is
accepted, since there nobody can replace another user's entry. A secret file, and a config file
holding a secret inline, must in addition be readable by root only (:func:`check_private`).

Windows: the ACL is not read. The service accepts only paths under the folders that are
writable by Administrators, SYSTEM and TrustedInstaller alone in a standard installation:
``%SystemRoot%``, ``%ProgramFiles%`` and the agent's ``%ProgramData%\\fleetpulse-agent``, whose
ACL ``deploy/agent/windows/install-service.ps1`` restricts to SYSTEM and Administrators.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

_LINUX_STATUS = Path("/proc/self/status")

POSIX_TOOL_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
"""Where bare tool names (``smartctl``) are looked up: systemd's default PATH, never ``$PATH``."""


class UntrustedPathError(ValueError):
    """A path a privileged agent must not read its configuration from or run."""


def running_privileged() -> bool:
    """True for the service: root, any effective Linux capability, or a Windows administrator."""
    if sys.platform == "win32":
        import ctypes

        return bool(ctypes.windll.shell32.IsUserAnAdmin())
    if os.geteuid() == 0:
        return True
    try:
        status = _LINUX_STATUS.read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16) != 0
    return False


def windows_trusted_roots() -> list[Path]:
    env = os.environ
    return [
        Path(env.get("SYSTEMROOT", r"C:\Windows")),
        Path(env.get("PROGRAMFILES", r"C:\Program Files")),
        Path(env.get("PROGRAMDATA", r"C:\ProgramData")) / "fleetpulse-agent",
    ]


def check_trusted(path: Path, what: str) -> None:
    """Raise :class:`UntrustedPathError` unless only administrators (or the agent) can change ``path``."""
    if not path.is_absolute():
        raise UntrustedPathError(f"{what} {path}: must be an absolute path")
    if sys.platform == "win32":
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root) for root in windows_trusted_roots()):
            roots = ", ".join(str(r) for r in windows_trusted_roots())
            raise UntrustedPathError(f"{what} {path}: must lie under a folder only administrators can write ({roots})")
        return
    owners = {0, os.geteuid()}
    for candidate in _chain(path):
        try:
            info = os.stat(candidate)
        except OSError as exc:
            raise UntrustedPathError(f"{what} {path}: cannot check {candidate}: {exc.strerror}") from None
        problem = _posix_problem(info, owners)
        if problem is not None:
            where = "" if candidate == path else f" (folder {candidate})"
            raise UntrustedPathError(
                f"{what} {path}{where} {problem}: refusing it, since the agent's service acts on it; "
                "make it owned by root and writable by root only"
            )


def check_private(path: Path, what: str, fix: str = "chmod 600 it") -> None:
    """Raise :class:`UntrustedPathError` if users other than root can read ``path`` (a secret, POSIX).

    Group read is accepted for group root only, as group write is: systemd's credentials are root's,
    mode 0400 plus an ACL entry for the service's user, which ``stat`` shows as group-readable.
    Windows: the ACL is not read (see above). Errors name the file, never its content.
    """
    if sys.platform == "win32":
        return
    try:
        info = os.stat(path)
    except OSError as exc:
        raise UntrustedPathError(f"{what} {path}: cannot check it: {exc.strerror}") from None
    mode = f"mode {stat.S_IMODE(info.st_mode):04o}"
    if info.st_mode & stat.S_IROTH:
        who = "every user"
    elif info.st_mode & stat.S_IRGRP and info.st_gid != 0:
        who = f"group {info.st_gid}"
    else:
        return
    raise UntrustedPathError(
        f"{what} {path} is readable by {who} ({mode}): refusing it, since the agent's service relies on it; {fix}"
    )


def _chain(path: Path) -> list[Path]:
    """The path and its folders, as given and as resolved (a symlink's target must be safe too)."""
    seen: dict[Path, None] = {}
    for start in (Path(os.path.abspath(path)), path.resolve()):
        for candidate in (start, *start.parents):
            seen.setdefault(candidate, None)
    return list(seen)


def _posix_problem(info: os.stat_result, owners: set[int]) -> str | None:
    if info.st_uid not in owners:
        return f"is owned by uid {info.st_uid}, not root"
    shared_folder = stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
    if info.st_mode & stat.S_IWOTH and not shared_folder:
        return f"is writable by every user (mode {stat.S_IMODE(info.st_mode):04o})"
    if info.st_mode & stat.S_IWGRP and info.st_gid != 0 and not shared_folder:
        return f"is writable by group {info.st_gid} (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def resolve_tool(name: str) -> str:
    """The absolute, trusted path of a tool named in argv[0]; bare names are looked up in system folders."""
    if os.path.isabs(name):
        path = Path(name)
    elif os.sep in name or (os.altsep and os.altsep in name):
        raise UntrustedPathError(f"tool {name}: must be an absolute path or a bare name")
    else:
        path = _find_system_tool(name)
    check_trusted(path, "tool")
    return str(path)


def _find_system_tool(name: str) -> Path:
    if sys.platform == "win32":
        root = Path(os.environ.get("SYSTEMROOT", r"C:\Windows"))
        folders = [
            root / "System32",
            root / "System32" / "WindowsPowerShell" / "v1.0",
            Path(os.environ.get("PROGRAMFILES", r"C:\Program Files")) / "smartmontools" / "bin",
        ]
        names = [name] if name.lower().endswith(".exe") else [name + ".exe", name]
    else:
        folders = [Path(d) for d in POSIX_TOOL_DIRS]
        names = [name]
    for folder in folders:
        for candidate in names:
            if (folder / candidate).is_file():
                return folder / candidate
    raise FileNotFoundError(f"{name}: not found in {', '.join(str(f) for f in folders)}")
