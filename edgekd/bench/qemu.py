"""The qemu runner's aarch64 root: where it lives, how it is built (`edgekd runner setup qemu`),
and the environment the ARM Python runs in. The runner itself is in runners.py.

Setup downloads (Debian's arm64 python packages, PyPI's aarch64 wheels), so it is a
command of its own, run once (CI runs it before the tests), never inside a test.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

from edgekd.artifacts import replace_dir
from edgekd.bench.proc import describe_exit, last_line, run_cmd, run_json
from edgekd.errors import BadInput

QEMU_ROOT_ENV = "EDGEKD_QEMU_ROOT"
QEMU_DEFAULT_ROOT = Path("~/.cache/edgekd/qemu-aarch64")
QEMU_BINARIES = ("qemu-aarch64-static", "qemu-aarch64")
QEMU_MARKER = "setup.json"            # written last: its presence means the root is complete
DEBIAN_MIRROR_ENV = "EDGEKD_DEBIAN_MIRROR"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
DEBIAN_SUITE = "bookworm"             # its python3.11 matches QEMU_PYTHON_VERSION
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
QEMU_DEBIAN_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
QEMU_PYTHON_VERSION = "3.11"
QEMU_WHEELS = ("numpy", "onnxruntime")
QEMU_WHEEL_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64",
                        "manylinux_2_28_aarch64")
SETUP_STEP_TIMEOUT_S = 900


def qemu_root(cache_dir: Path | None = None) -> Path:
    """The aarch64 root: cache_dir, else $EDGEKD_QEMU_ROOT, else ~/.cache/edgekd/qemu-aarch64."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser().resolve()
    return Path(os.environ.get(QEMU_ROOT_ENV) or QEMU_DEFAULT_ROOT).expanduser().resolve()


def qemu_setup_info(cache_dir: Path | None = None) -> dict | None:
    """The root's setup record, or None when it is not (completely) set up."""
    marker = qemu_root(cache_dir) / QEMU_MARKER
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _qemu_env(root: Path) -> dict:
    # A clean environment: the host's venv, PYTHONHOME or PYTHONPATH must not leak into the ARM Python.
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"), "LANG": "C.UTF-8",
            "PYTHONPATH": str(root / "site-packages"), "PYTHONNOUSERSITE": "1"}


def _cpuinfo_text(cpus: int) -> str:
    """An ARM-format /proc/cpuinfo (Cortex-A72, as a Raspberry Pi 4)."""
    entry = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
             "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
             "CPU revision\t: 3\n")
    return "\n".join(entry.format(i=i) for i in range(cpus)) + "\n"


def _write_cpuinfo(sysroot: Path) -> None:
    # onnxruntime's cpuinfo parses /proc/cpuinfo at import and segfaults on the host's x86 one.
    # qemu-user's -L prefix remaps every absolute path that exists under the prefix, so
    # SYSROOT/proc/cpuinfo is what the ARM process reads as /proc/cpuinfo.
    path = sysroot / "proc" / "cpuinfo"
    text = _cpuinfo_text(os.cpu_count() or 1)
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".cpuinfo.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def setup_qemu(*, cache_dir: Path | None = None, progress: Callable[[str], Any] = print,
               force: bool = False) -> Path:
    """Build the aarch64 root for the qemu runner and return its path.

    Steps: find (or apt-get install) qemu-user-static; download Debian's arm64
    python3.11 packages with a private apt state (the host's dpkg is untouched)
    and unpack them with dpkg-deb; download PyPI's aarch64 numpy and
    onnxruntime wheels (the host's versions) and unzip them; add an ARM
    /proc/cpuinfo; check `import onnxruntime` under qemu. The root is built
    beside its final place and renamed into it, so an interrupted setup
    leaves nothing half-made.
    """
    root = qemu_root(cache_dir)
    if not force and qemu_setup_info(root) is not None:
        progress(f"qemu runner already set up in {root}")
        return root
    started = time.monotonic()
    qemu = _find_or_install_qemu(progress)
    root.parent.mkdir(parents=True, exist_ok=True)
    work = root.parent / f".{root.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        sysroot = work / "sysroot"
        _install_debian_python(work, sysroot, progress)
        versions = _install_wheels(work, work / "site-packages", progress)
        _write_cpuinfo(sysroot)
        python = f"usr/bin/python{QEMU_PYTHON_VERSION}"
        progress("checking onnxruntime under qemu")
        probe = _probe_qemu_python(qemu, work, python)
        shutil.rmtree(work / "downloads", ignore_errors=True)
        info = {"qemu": qemu, "python": python, "debian_suite": DEBIAN_SUITE, "wheels": versions,
                **probe, "setup_seconds": round(time.monotonic() - started, 1)}
        (work / QEMU_MARKER).write_text(json.dumps(info, indent=2), encoding="utf-8")
        replace_dir(work, root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress(f"qemu runner ready in {root} ({info['setup_seconds']} s)")
    return root


def _find_or_install_qemu(progress: Callable[[str], Any]) -> str:
    for name in QEMU_BINARIES:
        found = shutil.which(name)
        if found:
            return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BadInput("qemu-user-static is not installed; install it (sudo apt-get install qemu-user-static) "
                       "and run `edgekd runner setup qemu` again")
    progress("installing qemu-user-static with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "qemu-user-static"]
    if run_cmd(cmd, timeout=SETUP_STEP_TIMEOUT_S, what="apt-get install", env=env).returncode != 0:
        run_cmd(["apt-get", "update"], timeout=SETUP_STEP_TIMEOUT_S, what="apt-get update", env=env)
        proc = run_cmd(cmd, timeout=SETUP_STEP_TIMEOUT_S, what="apt-get install", env=env)
        if proc.returncode != 0:
            raise BadInput(f"apt-get install qemu-user-static failed: {last_line(proc.stderr)}")
    for name in QEMU_BINARIES:
        if shutil.which(name):
            return shutil.which(name)
    raise BadInput("qemu-user-static installed but no qemu-aarch64 binary found on PATH")


def _apt_config(apt: Path) -> Path:
    """A private apt configuration: arm64 only, its own lists, cache and (empty) dpkg status."""
    if not DEBIAN_KEYRING.is_file():
        raise BadInput(f"{DEBIAN_KEYRING} not found; qemu setup needs Debian's archive keyring "
                       "(apt-get install debian-archive-keyring)")
    for sub in ("lists/partial", "cache/archives/partial", "etc/apt.conf.d", "etc/preferences.d",
                "etc/sources.list.d"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    mirror = os.environ.get(DEBIAN_MIRROR_ENV, DEBIAN_MIRROR)
    signed = f"[arch=arm64 signed-by={DEBIAN_KEYRING}]"
    (apt / "sources.list").write_text(
        f"deb {signed} {mirror} {DEBIAN_SUITE} main\n"
        f"deb {signed} {mirror} {DEBIAN_SUITE}-updates main\n"
        f"deb {signed} {DEBIAN_SECURITY_MIRROR} {DEBIAN_SUITE}-security main\n")
    conf = apt / "apt.conf"
    conf.write_text("\n".join([
        f'Dir::State "{apt}";', f'Dir::State::Lists "{apt}/lists";', f'Dir::State::status "{apt}/status";',
        f'Dir::Cache "{apt}/cache";', f'Dir::Etc::SourceList "{apt}/sources.list";',
        f'Dir::Etc::SourceParts "{apt}/etc/sources.list.d";', f'Dir::Etc::Parts "{apt}/etc/apt.conf.d";',
        f'Dir::Etc::PreferencesParts "{apt}/etc/preferences.d";',
        'APT::Architecture "arm64";', 'APT::Architectures { "arm64"; };',
        'APT::Install-Recommends "false";', 'APT::Sandbox::User "root";', 'Debug::NoLocking "true";',
    ]) + "\n")
    return conf


def _install_debian_python(work: Path, sysroot: Path, progress: Callable[[str], Any]) -> None:
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            raise BadInput(f"qemu setup needs '{tool}' (a Debian or Ubuntu host); it is not on PATH")
    apt = work / "downloads" / "apt"
    env = {**os.environ, "APT_CONFIG": str(_apt_config(apt)), "DEBIAN_FRONTEND": "noninteractive"}
    progress(f"downloading Debian {DEBIAN_SUITE} arm64 package lists")
    proc = run_cmd(["apt-get", "update"], timeout=SETUP_STEP_TIMEOUT_S, what="apt-get update (arm64)", env=env)
    if proc.returncode != 0:
        raise BadInput(f"apt-get update for arm64 failed: {last_line(proc.stderr)}")
    progress(f"downloading arm64 {', '.join(QEMU_DEBIAN_PACKAGES)} and their dependencies")
    proc = run_cmd(["apt-get", "install", "-y", "--download-only", *QEMU_DEBIAN_PACKAGES],
                timeout=SETUP_STEP_TIMEOUT_S, what="apt-get download (arm64)", env=env)
    if proc.returncode != 0:
        raise BadInput(f"downloading arm64 packages failed: {last_line(proc.stderr)}")
    debs = sorted((apt / "cache" / "archives").glob("*.deb"))
    progress(f"unpacking {len(debs)} arm64 packages")
    sysroot.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        proc = run_cmd(["dpkg-deb", "-x", str(deb), str(sysroot)], timeout=SETUP_STEP_TIMEOUT_S,
                    what=f"dpkg-deb -x {deb.name}")
        if proc.returncode != 0:
            raise BadInput(f"dpkg-deb -x {deb.name} failed: {last_line(proc.stderr)}")


def _host_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _install_wheels(work: Path, site: Path, progress: Callable[[str], Any]) -> dict:
    """PyPI's aarch64 wheels, pinned to this host's versions so both sides run the same onnxruntime."""
    dest = work / "downloads" / "wheels"
    base = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--python-version", QEMU_PYTHON_VERSION, "--implementation", "cp",
            "--dest", str(dest)]
    for plat in QEMU_WHEEL_PLATFORMS:
        base += ["--platform", plat]
    for package in QEMU_WHEELS:
        pinned = _host_version(package)
        progress(f"downloading aarch64 wheel {package}{'==' + pinned if pinned else ''}")
        proc = run_cmd(base + [f"{package}=={pinned}" if pinned else package],
                    timeout=SETUP_STEP_TIMEOUT_S, what=f"pip download {package}")
        if proc.returncode != 0 and pinned:
            progress(f"no aarch64 wheel of {package}=={pinned}; taking the newest")
            proc = run_cmd(base + [package], timeout=SETUP_STEP_TIMEOUT_S, what=f"pip download {package}")
        if proc.returncode != 0:
            raise BadInput(f"pip download of the aarch64 {package} wheel failed: {last_line(proc.stderr)}")
    site.mkdir(parents=True, exist_ok=True)
    versions = {}
    for wheel in sorted(dest.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
        versions[wheel.name.split("-")[0]] = wheel.name.split("-")[1]
    return versions


def _probe_qemu_python(qemu: str, root: Path, python: str) -> dict:
    code = ("import json, platform, numpy, onnxruntime; print(json.dumps({'machine': platform.machine(), "
            "'python_version': platform.python_version(), 'onnxruntime_version': onnxruntime.__version__, "
            "'numpy_version': numpy.__version__}))")
    sysroot = root / "sysroot"
    reply = run_json([qemu, "-L", str(sysroot), str(sysroot / python), "-c", code],
                     timeout=SETUP_STEP_TIMEOUT_S, what="importing onnxruntime under qemu", env=_qemu_env(root))
    if reply.rc != 0 or reply.obj is None:
        raise BadInput(f"importing onnxruntime under qemu {describe_exit(reply.rc)}: {last_line(reply.stderr)}")
    return reply.obj
