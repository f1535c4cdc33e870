"""Where the bench agent runs: here, under qemu's aarch64 emulation, or on a device over ssh.

Every runner runs the same standalone script, `edgekd/runtime/agent.py`, in its own
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
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edgekd import defaults
from edgekd.bench.proc import (  # noqa: F401  (AgentFailed, JsonReply: part of this module's API)
    AgentFailed,
    JsonReply,
    run_json,
)
from edgekd.bench.proc import describe_exit as _describe_exit
from edgekd.bench.proc import existing_file as _existing_file
from edgekd.bench.proc import last_json as _last_json
from edgekd.bench.proc import last_line as _last_line
from edgekd.bench.proc import run_cmd as _run
from edgekd.bench.qemu import (  # noqa: F401  (re-exported: the runner's setup lives in qemu.py)
    QEMU_ROOT_ENV,
    _qemu_env,
    _write_cpuinfo,
    qemu_root,
    qemu_setup_info,
    setup_qemu,
)
from edgekd.errors import BadInput
from edgekd.runtime import AGENT_OPTIONS, AGENT_PATH

RUNNER_FORMS = "local, qemu, ssh://USER@HOST[:PORT]"

QEMU_NOTE = ("timings are under qemu-user emulation of aarch64 on this host and are not target "
             "figures; peak_rss_mb includes the emulator. Parity (golden) is the ARM build's real result.")

# ssh
SSH_KNOWN_HOSTS_ENV = "EDGEKD_SSH_KNOWN_HOSTS"
SSH_IDENTITY_ENV = "EDGEKD_SSH_IDENTITY"
SSH_PYTHON_ENV = "EDGEKD_SSH_PYTHON"
SSH_PYTHON = "python3"
SSH_CONNECT_TIMEOUT_S = 15
SSH_STEP_TIMEOUT_S = 120              # mktemp, copy, cleanup; the agent run has its own timeout


# ================================================================ common
class Runner:
    """Runs agent.py somewhere and returns its JSON plus `runner`."""

    spec: str = ""
    where: str = ""       # for messages: "local", "qemu", "USER@HOST"

    def run(self, *, model: Path, config: dict, golden: Path | None = None, inputs: Path | None = None,
            timeout: float = 600) -> dict:
        model = _existing_file(model, "model")
        golden = _existing_file(golden, "golden") if golden is not None else None
        inputs = _existing_file(inputs, "inputs") if inputs is not None else None
        with tempfile.TemporaryDirectory(prefix="edgekd-bench-") as tmp:
            config_path = Path(tmp) / AGENT_OPTIONS
            config_path.write_text(json.dumps(self._config(config)), encoding="utf-8")
            reply = self._execute(model=model, config=config_path, golden=golden, inputs=inputs, timeout=timeout)
        result = self._parse(reply)
        result["runner"] = self.spec
        return result

    # Subclasses: run the agent through run_json and return its JsonReply.
    def _execute(self, *, model: Path, config: Path, golden: Path | None, inputs: Path | None,
                 timeout: float) -> "JsonReply":
        raise NotImplementedError

    def _config(self, config: dict) -> dict:
        return dict(config)

    def _missing_runtime(self) -> str:
        return f"onnxruntime is not installed for the bench agent on {self.where} (pip install onnxruntime numpy)"

    def _parse(self, reply: "JsonReply") -> dict:
        """The agent's result, or BadInput. The agent names its error's kind as data."""
        result = reply.obj
        if result is not None and "error" in result:
            error = result["error"]
            kind, message = (error.get("kind"), error.get("message")) if isinstance(error, dict) else (None, error)
            if kind == "missing_runtime":
                raise BadInput(self._missing_runtime())
            raise AgentFailed(f"bench agent on {self.where}: {message}", kind=kind or "internal")
        if result is not None and reply.rc == 0:
            return result
        if "ModuleNotFoundError" in reply.stderr or "No module named" in reply.stderr:
            # Python died before the agent could answer (no JSON at all): the interpreter's own words.
            raise BadInput(self._missing_runtime())
        raise BadInput(f"bench agent on {self.where} {_describe_exit(reply.rc)} without a result: "
                       f"{_last_line(reply.stderr)}")


def _agent_args(model: str, config: str, golden: str | None, inputs: str | None = None) -> list[str]:
    args = ["--model", model, "--config", config]
    args += ["--golden", golden] if golden else []
    return args + ["--inputs", inputs] if inputs else args


def agent_config(profile: Any, *, min_runs: int = defaults.BENCH_MIN_RUNS,
                 min_seconds: float = defaults.BENCH_MIN_SECONDS, warmup: int = defaults.BENCH_WARMUP,
                 batches: tuple[int, ...] = defaults.THROUGHPUT_BATCHES, int8: bool = False) -> dict:
    """The agent's config for a `edgekd.deploy.targets.TargetProfile`."""
    parity = profile.parity
    min_top1 = parity.int8_min_top1_agreement if int8 and parity.int8_min_top1_agreement is not None \
        else parity.min_top1_agreement
    return {
        "providers": [p.to_dict() for p in profile.providers],
        "intra_op_threads": profile.intra_op_threads,
        "inter_op_threads": profile.inter_op_threads,
        "graph_optimization": profile.graph_optimization,
        "min_runs": min_runs, "min_seconds": min_seconds, "warmup": warmup, "batches": list(batches),
        "atol": parity.atol, "rtol": parity.rtol, "min_top1_agreement": min_top1,
        # int8 variants are held to top-1 only, whatever the provider computes in
        "tolerances": {} if int8 else {p: vars(t) for p, t in parity.reduced.items()},
    }


# ================================================================ local
class LocalRunner(Runner):
    """agent.py in a subprocess (its own process: peak RSS is the runtime's): this Python, or the
    interpreter of the target's runtime environment (`[runtime] package`, edgekd.deploy.runtimes)."""

    def __init__(self, *, python: str = sys.executable, target: Any = None) -> None:
        self.spec = self.where = "local"
        self.python = python
        self.env: dict | None = None
        self.runtime: dict | None = None
        self.setup = ""
        if target is not None and target.package:
            from edgekd.deploy.runtimes import clean_env, env_python, require, runtime_record

            st = require(target)    # missing: one line with the setup command; broken: naming it
            self.python, self.env = str(env_python(Path(st["path"]))), clean_env()
            self.runtime, self.setup = runtime_record(target, st), st["setup"]
            self.where = f"local ({target.package} in {st['path']})"

    def _missing_runtime(self) -> str:
        if self.runtime:
            return (f"the runtime environment {self.runtime['path']} ({self.runtime['package']}) is broken: "
                    f"onnxruntime does not import; run `{self.setup} --force`")
        return super()._missing_runtime()

    def _execute(self, *, model, config, golden, inputs, timeout):
        cmd = [self.python, str(AGENT_PATH),
               *_agent_args(str(model), str(config), golden and str(golden), inputs and str(inputs))]
        return run_json(cmd, timeout=timeout, what=f"bench agent on {self.where}", env=self.env)

    def run(self, *, model: Path, config: dict, golden: Path | None = None, inputs: Path | None = None,
            timeout: float = 600) -> dict:
        result = super().run(model=model, config=config, golden=golden, inputs=inputs, timeout=timeout)
        runtime = self.runtime or {"mechanism": "host", "onnxruntime_version": result.get("onnxruntime_version"),
                                   "python": self.python}
        result.setdefault("execution", {})["runtime"] = runtime
        return result


# ================================================================ qemu
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

    def _execute(self, *, model, config, golden, inputs, timeout):
        info = qemu_setup_info(self.root)
        if info is None:
            raise BadInput("qemu runner not set up; run `edgekd runner setup qemu`")
        sysroot = self.root / "sysroot"
        _write_cpuinfo(sysroot)  # the host's core count may differ from setup time
        cmd = [info["qemu"], "-L", str(sysroot), str(sysroot / info["python"]), "-s", str(AGENT_PATH),
               *_agent_args(str(model), str(config), golden and str(golden), inputs and str(inputs))]
        return run_json(cmd, timeout=timeout, what="bench agent under qemu", env=_qemu_env(self.root))

    def run(self, *, model: Path, config: dict, golden: Path | None = None, inputs: Path | None = None,
            timeout: float = 600) -> dict:
        result = super().run(model=model, config=config, golden=golden, inputs=inputs, timeout=timeout)
        result["emulated"] = True
        result["note"] = QEMU_NOTE
        return result


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
        host_keys = "yes" if self.strict_host_keys else "accept-new"
        opts = ["-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={host_keys}",
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

    def _ssh_json(self, remote_command: str, *, timeout: float, what: str) -> JsonReply:
        proc = self._ssh(remote_command, timeout=timeout, what=what)
        return JsonReply(proc.returncode, _last_json(proc.stdout), proc.stdout, proc.stderr)

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

    def _execute(self, *, model, config, golden, inputs, timeout):
        remote = self._mktemp()
        self.last_device_dir = remote
        failed = True
        try:
            self._copy_inputs(model, config, golden, inputs, remote)
            python = " ".join(shlex.quote(word) for word in shlex.split(self.python))
            args = _agent_args("model.onnx", AGENT_OPTIONS, "golden.npz" if golden else None,
                               "inputs.npz" if inputs else None)
            command = f"cd {shlex.quote(remote)} && {python} agent.py {' '.join(map(shlex.quote, args))}"
            reply = self._ssh_json(command, timeout=timeout, what="bench agent")
            if reply.rc == 127 and reply.obj is None:
                raise BadInput(f"'{self.python}' not found on {self.where} ({_last_line(reply.stderr)}); "
                               f"set {SSH_PYTHON_ENV} to the device's Python 3")
            failed = False
            return reply
        finally:
            problem = self._cleanup(remote)
            if problem and not failed:
                raise BadInput(f"could not remove {remote} on {self.where}: {problem}")

    def _copy_inputs(self, model: Path, config: Path, golden: Path | None, inputs: Path | None,
                     remote: str) -> None:
        # Fixed names on the device: no local file name ever reaches the remote shell.
        with tempfile.TemporaryDirectory(prefix="edgekd-ssh-") as tmp:
            stage = Path(tmp)
            pairs = [(AGENT_PATH, "agent.py"), (model, "model.onnx"), (config, AGENT_OPTIONS)]
            if golden is not None:
                pairs.append((golden, "golden.npz"))
            if inputs is not None:
                pairs.append((inputs, "inputs.npz"))
            for src, name in pairs:
                os.symlink(src, stage / name)  # scp reads through the link
            self._scp([stage / name for _, name in pairs], remote)

    def _missing_runtime(self) -> str:
        return f"onnxruntime is not installed on {self.where} (pip install onnxruntime numpy there)"


# ================================================================ factory
def get_runner(spec: str, target: Any = None) -> Runner:
    """`local`, `qemu`, or `ssh://USER@HOST[:PORT]`. `local` with a target whose profile names a
    `[runtime] package` runs the agent in that runtime environment."""
    if spec == "local":
        return LocalRunner(target=target)
    if spec == "qemu":
        return QemuRunner()
    if isinstance(spec, str) and spec.startswith("ssh://"):
        return SshRunner(spec)
    raise BadInput(f"unknown runner '{spec}'; valid: {RUNNER_FORMS}")
