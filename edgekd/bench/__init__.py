"""Benchmarking: orchestration (`run`), runners (local, qemu, ssh) and their process helpers.

The agent the runners run is `edgekd/runtime/agent.py` (a standalone script, below deploy and bench).

`edgekd.bench` is also the API function (`edgekd.bench(target=..., run=...)`): a
package attribute cannot be both a module and a function, so this module is callable
and its call is `edgekd.api.bench`, resolved lazily by the root package (`edgekd.CallableModule`),
as every public name is. Nothing is imported until it is called.
"""

from __future__ import annotations

import sys

from edgekd import CallableModule

sys.modules[__name__].__class__ = CallableModule
