"""The wheel's package list matches the source tree: every component folder with code ships, nothing is linked.

The card's top-level folders (agents/, streams/, ...) become ``fleetpulse.<component>`` through
setuptools' ``package-dir`` mapping, so the checkout needs no symlinks (Windows checkouts and tools
that read the tree see plain folders). A new sub-package must be added to the list, or it would be
missing from every install while the editable checkout still imports it.
"""

from __future__ import annotations

from pathlib import Path

from fleetpulse.compat import tomllib

REPO = Path(__file__).resolve().parents[2]


def _setuptools() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def _source_dir(package: str, package_dir: dict[str, str]) -> Path:
    for prefix in sorted(package_dir, key=len, reverse=True):
        if package == prefix or package.startswith(prefix + "."):
            rest = package[len(prefix) :].lstrip(".").replace(".", "/")
            return REPO / package_dir[prefix] / rest
    return REPO / package.replace(".", "/")


def test_every_folder_with_code_is_a_listed_package() -> None:
    config = _setuptools()
    package_dir: dict[str, str] = config["package-dir"]
    listed = set(config["packages"])
    roots = {"fleetpulse": REPO / "fleetpulse"} | {name: REPO / path for name, path in package_dir.items()}
    found: set[str] = set()
    for name, root in roots.items():
        for init in root.rglob("__init__.py"):
            relative = init.parent.relative_to(root)
            found.add(".".join([name, *relative.parts]))
    assert found == listed, f"not listed: {sorted(found - listed)}; listed without code: {sorted(listed - found)}"
    for package in listed:
        assert (_source_dir(package, package_dir) / "__init__.py").is_file(), package


def test_the_checkout_holds_no_symlinks() -> None:
    linked = [
        str(path.relative_to(REPO))
        for top in ("fleetpulse", *(p for p in _setuptools()["package-dir"].values()))
        for path in [REPO / top, *(REPO / top).rglob("*")]
        if path.is_symlink()
    ]
    assert not linked, f"symlinks in the package tree: {linked}"
