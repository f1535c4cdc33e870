"""Running a command and reading the one JSON object it prints: the runners' (and the
student search's) single subprocess helper."""

from __future__ import annotations

import json
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgekd.errors import BadInput


class AgentFailed(BadInput):
    """The agent answered with an error; `kind` is its machine-readable kind (agent.ERROR_KINDS)."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class JsonReply:
    """A finished command: exit code, its last stdout line parsed as a JSON object (or None), stderr."""

    rc: int
    obj: dict | None
    stdout: str
    stderr: str


def run_json(cmd: list[str], *, timeout: float, what: str, env: dict | None = None,
             input: str | None = None) -> JsonReply:
    """The one subprocess-with-JSON helper: run `cmd` (with `input` on stdin), parse the JSON object
    on its last stdout line. A missing program or a timeout is BadInput naming `what`."""
    proc = run_cmd(cmd, timeout=timeout, what=what, env=env, input=input)
    return JsonReply(proc.returncode, last_json(proc.stdout), proc.stdout, proc.stderr)


def existing_file(path: Path | str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise BadInput(f"{p}: {what} file not found")
    return p.resolve()


def last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None
    return None


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


def run_cmd(cmd: list[str], *, timeout: float, what: str, env: dict | None = None,
         input: str | None = None) -> subprocess.CompletedProcess:
    """subprocess.run with our errors: a missing program or a timeout is BadInput."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise BadInput(f"{what}: program '{cmd[0]}' not found") from None
    except subprocess.TimeoutExpired:
        raise BadInput(f"{what} timed out after {timeout:g} s") from None
