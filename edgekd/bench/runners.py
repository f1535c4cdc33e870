"""Where the bench agent runs: here, under qemu's aarch64 emulation, or on a device over ssh.

Every runner runs the same standalone script, `edgekd/agent.py`, in its own
process, and returns the same JSON: the agent's object plus `runner` (the
spec). The agent measures; runners only move files and classify failures.

    get_runner("local" | "qemu" | "ssh://USER@HOST[:PORT]").run(model=..., config=..., golden=...)

Any failure is a `BadInput` with one line naming what went wrong and where.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

from edgekd import defaults
from edgekd.errors import BadInput

AGENT_PATH = Path(__file__).resolve().with_name("agent.py")
RUNNER_FORMS = "local, qemu, ssh://USER@HOST[:PORT]"

# qemu: an aarch64 Debian Python with PyPI's aarch64 numpy and onnxruntime wheels.
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
QEMU_NOTE = ("timings are under qemu-user emulation of aarch64 on this host and are not target "
             "figures; peak_rss_mb includes the emulator. Parity (golden) is the ARM build's real result.")

# ssh
SSH_KNOWN_HOSTS_ENV = "EDGEKD_SSH_KNOWN_HOSTS"
SSH_IDENTITY_ENV = "EDGEKD_SSH_IDENTITY"
SSH_PYTHON_ENV = "EDGEKD_SSH_PYTHON"
SSH_PYTHON = "python3"
SSH_CONNECT_TIMEOUT_S = 15
SSH_STEP_TIMEOUT_S = 120              # mktemp, copy, cleanup; the agent run has its own timeout
SETUP_STEP_TIMEOUT_S = 900


# ================================================================ common
class Runner:
    """Runs agent.py somewhere and returns its JSON plus `runner`."""

    spec: str = ""
    where: str = ""       # for messages: "local", "qemu", "USER@HOST"

    def run(self, *, model: Path, config: dict, golden: Path | None = None,
            timeout: float = 600) -> dict:
        model = _existing_file(model, "model")
        golden = _existing_file(golden, "golden") if golden is not None else None
        with tempfile.TemporaryDirectory(prefix="edgekd-bench-") as tmp:
            config_path = Path(tmp) / "config.json"
            config_path.write_text(json.dumps(self._config(config)), encoding="utf-8")
            rc, out, err = self._execute(model=model, config=config_path, golden=golden, timeout=timeout)
        result = self._parse(rc, out, err)
        result["runner"] = self.spec
        return result

    # Subclasses: run the agent, return (exit code, stdout, stderr).
    def _execute(self, *, model: Path, config: Path, golden: Path | None,
                 timeout: float) -> tuple[int, str, str]:
        raise NotImplementedError

    def _config(self, config: dict) -> dict:
        return dict(config)

    def _missing_runtime(self) -> str:
        return f"onnxruntime is not installed for the bench agent on {self.where} (pip install onnxruntime numpy)"

    def _parse(self, rc: int, out: str, err: str) -> dict:
        result = _last_json(out)
        if result is not None and "error" in result:
            if "ModuleNotFoundError" in str(result["error"]):
                raise BadInput(self._missing_runtime())
            raise BadInput(f"bench agent on {self.where}: {result['error']}")
        if result is not None and rc == 0:
            return result
        if "ModuleNotFoundError" in err or "No module named" in err:
            raise BadInput(self._missing_runtime())
        raise BadInput(f"bench agent on {self.where} {_describe_exit(rc)} without a result: {_last_line(err)}")


def _existing_file(path: Path | str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise BadInput(f"{p}: {what} file not found")
    return p.resolve()


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None
    return None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def _describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


def _run(cmd: list[str], *, timeout: float, what: str, env: dict | None = None,
         input: str | None = None) -> subprocess.CompletedProcess:
    """subprocess.run with our errors: a missing program or a timeout is BadInput."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise BadInput(f"{what}: program '{cmd[0]}' not found") from None
    except subprocess.TimeoutExpired:
        raise BadInput(f"{what} timed out after {timeout:g} s") from None


def _agent_args(model: str, config: str, golden: str | None) -> list[str]:
    args = ["--model", model, "--config", config]
    return args + ["--golden", golden] if golden else args


def agent_config(profile: Any, *, min_runs: int = defaults.BENCH_MIN_RUNS,
                 min_seconds: float = defaults.BENCH_MIN_SECONDS, warmup: int = defaults.BENCH_WARMUP,
                 batches: tuple[int, ...] = defaults.THROUGHPUT_BATCHES, int8: bool = False) -> dict:
    """The agent's config for a `edgekd.deploy.targets.TargetProfile`."""
    parity = profile.parity
    min_top1 = parity.int8_min_top1_agreement if int8 and parity.int8_min_top1_agreement is not None \
        else parity.min_top1_agreement
    return {
        "providers": [{"name": p.name, "options": dict(p.options)} for p in profile.providers],
        "intra_op_threads": profile.intra_op_threads,
        "inter_op_threads": profile.inter_op_threads,
        "graph_optimization": profile.graph_optimization,
        "min_runs": min_runs, "min_seconds": min_seconds, "warmup": warmup, "batches": list(batches),
        "atol": parity.atol, "rtol": parity.rtol, "min_top1_agreement": min_top1,
    }


# ================================================================ local
class LocalRunner(Runner):
    """agent.py in a subprocess of this Python (its own process: peak RSS is the runtime's)."""

    def __init__(self, *, python: str = sys.executable) -> None:
        self.spec = self.where = "local"
        self.python = python

    def _execute(self, *, model, config, golden, timeout):
        cmd = [self.python, str(AGENT_PATH), *_agent_args(str(model), str(config), golden and str(golden))]
        proc = _run(cmd, timeout=timeout, what="bench agent on local")
        return proc.returncode, proc.stdout, proc.stderr


# ================================================================ qemu
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


class QemuRunner(Runner):
    """agent.py under qemu-user with Debian's aarch64 Python and PyPI's aarch64 onnxruntime.

    Timings are emulated and marked so; parity against golden vectors is the
    ARM build's genuine result, which is the point of this runner.
    """

    def __init__(self, *, cache_dir: Path | None = None) -> None:
        self.spec = "qemu"
        self.where = "qemu (emulated aarch64)"
        self.root = qemu_root(cache_dir)

    def _config(self, config: dict) -> dict:
        return {**config, "emulated": True}

    def _missing_runtime(self) -> str:
        return f"the qemu root {self.root} lacks onnxruntime; run `edgekd runner setup qemu` again"

    def _execute(self, *, model, config, golden, timeout):
        info = qemu_setup_info(self.root)
        if info is None:
            raise BadInput("qemu runner not set up; run `edgekd runner setup qemu`")
        sysroot = self.root / "sysroot"
        _write_cpuinfo(sysroot)  # the host's core count may differ from setup time
        cmd = [info["qemu"], "-L", str(sysroot), str(sysroot / info["python"]), "-s", str(AGENT_PATH),
               *_agent_args(str(model), str(config), golden and str(golden))]
        proc = _run(cmd, timeout=timeout, what="bench agent under qemu", env=_qemu_env(self.root))
        return proc.returncode, proc.stdout, proc.stderr

    def run(self, *, model: Path, config: dict, golden: Path | None = None, timeout: float = 600) -> dict:
        result = super().run(model=model, config=config, golden=golden, timeout=timeout)
        result["emulated"] = True
        result["note"] = QEMU_NOTE
        return result


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
        _replace_dir(work, root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress(f"qemu runner ready in {root} ({info['setup_seconds']} s)")
    return root


def _replace_dir(new: Path, dest: Path) -> None:
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    if dest.exists():
        os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)


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
    if _run(cmd, timeout=SETUP_STEP_TIMEOUT_S, what="apt-get install", env=env).returncode != 0:
        _run(["apt-get", "update"], timeout=SETUP_STEP_TIMEOUT_S, what="apt-get update", env=env)
        proc = _run(cmd, timeout=SETUP_STEP_TIMEOUT_S, what="apt-get install", env=env)
        if proc.returncode != 0:
            raise BadInput(f"apt-get install qemu-user-static failed: {_last_line(proc.stderr)}")
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
    proc = _run(["apt-get", "update"], timeout=SETUP_STEP_TIMEOUT_S, what="apt-get update (arm64)", env=env)
    if proc.returncode != 0:
        raise BadInput(f"apt-get update for arm64 failed: {_last_line(proc.stderr)}")
    progress(f"downloading arm64 {', '.join(QEMU_DEBIAN_PACKAGES)} and their dependencies")
    proc = _run(["apt-get", "install", "-y", "--download-only", *QEMU_DEBIAN_PACKAGES],
                timeout=SETUP_STEP_TIMEOUT_S, what="apt-get download (arm64)", env=env)
    if proc.returncode != 0:
        raise BadInput(f"downloading arm64 packages failed: {_last_line(proc.stderr)}")
    debs = sorted((apt / "cache" / "archives").glob("*.deb"))
    progress(f"unpacking {len(debs)} arm64 packages")
    sysroot.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        proc = _run(["dpkg-deb", "-x", str(deb), str(sysroot)], timeout=SETUP_STEP_TIMEOUT_S,
                    what=f"dpkg-deb -x {deb.name}")
        if proc.returncode != 0:
            raise BadInput(f"dpkg-deb -x {deb.name} failed: {_last_line(proc.stderr)}")


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
        proc = _run(base + [f"{package}=={pinned}" if pinned else package],
                    timeout=SETUP_STEP_TIMEOUT_S, what=f"pip download {package}")
        if proc.returncode != 0 and pinned:
            progress(f"no aarch64 wheel of {package}=={pinned}; taking the newest")
            proc = _run(base + [package], timeout=SETUP_STEP_TIMEOUT_S, what=f"pip download {package}")
        if proc.returncode != 0:
            raise BadInput(f"pip download of the aarch64 {package} wheel failed: {_last_line(proc.stderr)}")
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
    proc = _run([qemu, "-L", str(sysroot), str(sysroot / python), "-c", code],
                timeout=SETUP_STEP_TIMEOUT_S, what="importing onnxruntime under qemu", env=_qemu_env(root))
    found = _last_json(proc.stdout)
    if proc.returncode != 0 or found is None:
        raise BadInput(f"importing onnxruntime under qemu {_describe_exit(proc.returncode)}: {_last_line(proc.stderr)}")
    return found


# ================================================================ ssh
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]{2,45}\]")
_REMOTE_DIR = re.compile(r"/[A-Za-z0-9._/+-]*edgekd\.[A-Za-z0-9]+")
SSH_FORM = "ssh://USER@HOST[:PORT]"


def parse_ssh_url(spec: str) -> tuple[str, str, int | None]:
    """(user, host, port) from ssh://USER@HOST[:PORT]; BadInput naming the bad part."""
    if not spec.startswith("ssh://"):
        raise BadInput(f"runner '{spec}' is not an ssh URL; form: {SSH_FORM}")
    rest = spec[len("ssh://"):].rstrip("/")
    user, at, hostport = rest.rpartition("@")
    if not at or not user:
        raise BadInput(f"ssh runner '{spec}': missing USER@; form: {SSH_FORM}")
    if not _USER.fullmatch(user):
        raise BadInput(f"ssh runner '{spec}': bad user '{user}'; valid: letters, digits, '.', '_', '-' "
                       f"(not first), at most 64; form: {SSH_FORM}")
    if hostport.startswith("["):
        host, _, port_text = hostport.partition("]")
        host += "]"
        if port_text and not port_text.startswith(":"):
            raise BadInput(f"ssh runner '{spec}': bad host '{hostport}'; form: {SSH_FORM}")
        port_text = port_text[1:] if port_text else None
    else:
        host, colon, port_text = hostport.partition(":")
        port_text = port_text if colon else None
    if not (_HOSTNAME.fullmatch(host) or _IPV6.fullmatch(host)):
        raise BadInput(f"ssh runner '{spec}': bad host '{host}'; valid: a hostname or IPv4 address "
                       f"(letters, digits, '.', '-'), or [IPv6]; form: {SSH_FORM}")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise BadInput(f"ssh runner '{spec}': bad port '{port_text}'; valid: 1..65535")
        port = int(port_text)
    return user, host, port


class SshRunner(Runner):
    """agent.py on a device over ssh/scp, key authentication only.

    Copies agent.py, the model, the config and the golden file into a fresh
    `mktemp -d` folder on the device, runs the device's Python there, reads the
    JSON from stdout, and always removes the folder. Every remote word is
    shlex-quoted; local commands are argument lists.
    """

    def __init__(self, spec: str, *, known_hosts: Path | str | None = None,
                 identity: Path | str | None = None, python: str | None = None,
                 remote_tmpdir: str | None = None, strict_host_keys: bool = True,
                 connect_timeout: int = SSH_CONNECT_TIMEOUT_S) -> None:
        self.user, self.host, self.port = parse_ssh_url(spec)
        self.spec = spec
        self.where = f"{self.user}@{self.host}"
        self.known_hosts = known_hosts or os.environ.get(SSH_KNOWN_HOSTS_ENV) or None
        self.identity = identity or os.environ.get(SSH_IDENTITY_ENV) or None
        self.python = python or os.environ.get(SSH_PYTHON_ENV) or SSH_PYTHON
        self.remote_tmpdir = remote_tmpdir
        self.strict_host_keys = strict_host_keys
        self.connect_timeout = connect_timeout
        self.last_device_dir: str | None = None   # the device folder of the latest run (removed)

    # ------------------------------------------------------------ commands
    def _options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={'yes' if self.strict_host_keys else 'accept-new'}",
                "-o", f"ConnectTimeout={self.connect_timeout}", "-o", "LogLevel=ERROR",
                "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no"]
        if self.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={Path(self.known_hosts).expanduser()}"]
        if self.identity:
            opts += ["-i", str(Path(self.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        return opts

    def _ssh(self, remote_command: str, *, timeout: float, what: str) -> subprocess.CompletedProcess:
        cmd = ["ssh", *self._options()]
        if self.port:
            cmd += ["-p", str(self.port)]
        cmd += ["--", f"{self.user}@{self.host.strip('[]')}", remote_command]
        proc = _run(cmd, timeout=timeout, what=f"{what} on {self.where}")
        if proc.returncode == 255:  # ssh's own failure, not the remote command's
            raise BadInput(self._ssh_failure(proc.stderr))
        return proc

    def _scp(self, files: list[Path], remote_dir: str) -> None:
        cmd = ["scp", "-q", *self._options()]
        if self.port:
            cmd += ["-P", str(self.port)]
        cmd += ["--", *map(str, files), f"{self.user}@{self.host}:{remote_dir}/"]
        proc = _run(cmd, timeout=SSH_STEP_TIMEOUT_S, what=f"copying files to {self.where}")
        if proc.returncode != 0:
            raise BadInput(self._ssh_failure(proc.stderr))

    def _ssh_failure(self, stderr: str) -> str:
        target = f"{self.where}:{self.port or 22}"
        if "Host key verification failed" in stderr or "HOST IDENTIFICATION HAS CHANGED" in stderr:
            where = self.known_hosts or "~/.ssh/known_hosts"
            return (f"ssh host key for {target} is unknown or changed (Host key verification failed); "
                    f"add the device's key to {where} (ssh-keyscan) or set {SSH_KNOWN_HOSTS_ENV}")
        if "Permission denied" in stderr:
            return (f"ssh key authentication to {target} failed (Permission denied); edgekd uses key auth "
                    f"only: authorize your key on the device or set {SSH_IDENTITY_ENV}")
        for sign in ("Connection refused", "Could not resolve hostname", "No route to host",
                     "Connection timed out", "Network is unreachable", "Operation timed out",
                     "Connection closed", "Connection reset"):
            if sign in stderr:
                return f"cannot reach {target}: {_last_line(stderr)}"
        return f"ssh to {target} failed: {_last_line(stderr)}"

    # ------------------------------------------------------------ steps
    def _mktemp(self) -> str:
        if self.remote_tmpdir:
            command = f"mktemp -d {shlex.quote(self.remote_tmpdir.rstrip('/') + '/edgekd.XXXXXXXX')}"
        else:
            command = 'mktemp -d "${TMPDIR:-/tmp}/edgekd.XXXXXXXX"'
        proc = self._ssh(command, timeout=SSH_STEP_TIMEOUT_S, what="mktemp -d")
        path = proc.stdout.strip()
        # Only a path of this shape is ever handed to rm -rf.
        if proc.returncode != 0 or not _REMOTE_DIR.fullmatch(path) or "/../" in path:
            raise BadInput(f"could not create a temp folder on {self.where}: "
                           f"{_last_line(proc.stderr) if proc.returncode else repr(path)}")
        return path

    def _cleanup(self, remote_dir: str) -> str | None:
        try:
            proc = self._ssh(f"rm -rf -- {shlex.quote(remote_dir)}", timeout=SSH_STEP_TIMEOUT_S, what="rm -rf")
        except BadInput as e:
            return str(e)
        return None if proc.returncode == 0 else _last_line(proc.stderr)

    def _execute(self, *, model, config, golden, timeout):
        remote = self._mktemp()
        self.last_device_dir = remote
        failed = True
        try:
            self._copy_inputs(model, config, golden, remote)
            python = " ".join(shlex.quote(word) for word in shlex.split(self.python))
            args = _agent_args("model.onnx", "config.json", "golden.npz" if golden else None)
            command = f"cd {shlex.quote(remote)} && {python} agent.py {' '.join(map(shlex.quote, args))}"
            proc = self._ssh(command, timeout=timeout, what="bench agent")
            if proc.returncode == 127 and _last_json(proc.stdout) is None:
                raise BadInput(f"'{self.python}' not found on {self.where} ({_last_line(proc.stderr)}); "
                               f"set {SSH_PYTHON_ENV} to the device's Python 3")
            failed = False
            return proc.returncode, proc.stdout, proc.stderr
        finally:
            problem = self._cleanup(remote)
            if problem and not failed:
                raise BadInput(f"could not remove {remote} on {self.where}: {problem}")

    def _copy_inputs(self, model: Path, config: Path, golden: Path | None, remote: str) -> None:
        # Fixed names on the device: no local file name ever reaches the remote shell.
        with tempfile.TemporaryDirectory(prefix="edgekd-ssh-") as tmp:
            stage = Path(tmp)
            pairs = [(AGENT_PATH, "agent.py"), (model, "model.onnx"), (config, "config.json")]
            if golden is not None:
                pairs.append((golden, "golden.npz"))
            for src, name in pairs:
                os.symlink(src, stage / name)  # scp reads through the link
            self._scp([stage / name for _, name in pairs], remote)

    def _missing_runtime(self) -> str:
        return f"onnxruntime is not installed on {self.where} (pip install onnxruntime numpy there)"


# ================================================================ factory
def get_runner(spec: str) -> Runner:
    """`local`, `qemu`, or `ssh://USER@HOST[:PORT]`."""
    if spec == "local":
        return LocalRunner()
    if spec == "qemu":
        return QemuRunner()
    if isinstance(spec, str) and spec.startswith("ssh://"):
        return SshRunner(spec)
    raise BadInput(f"unknown runner '{spec}'; valid: {RUNNER_FORMS}")
