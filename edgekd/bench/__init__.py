"""Benchmarking: orchestration, runners (local, qemu, ssh) and the standalone agent.

`edgekd.bench` is also the API function (`edgekd.bench(target=..., run=...)`): a
package attribute cannot be both a module and a function, so this module is callable
and its call is `edgekd.api.bench`. Nothing is imported until it is called.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, **kwargs: Any) -> Any:
        from edgekd.api import bench

        return bench(**kwargs)


sys.modules[__name__].__class__ = _CallableModule
