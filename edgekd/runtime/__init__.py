"""ONNX Runtime, the one place sessions are built.

- `agent`: the standalone bench agent (standard library, numpy and onnxruntime only): it is copied alone to
  devices, qemu roots and runtime environments, and it holds the session builder (providers in priority
  order, plugin EPs, the CPU fallback), the feeds, the fixed-batch chunking and the parity convention;
- `session`: the same builder for edgekd's own checks (parity, the audit's real partition, the optimized
  model the mobile audit reads, the foreign ONNX teacher), raising edgekd's errors.

This package sits below data, models and every stage: deploy and bench both use it, so deploy never
imports bench.
"""

from pathlib import Path

# The agent script itself, for runners that copy it or run it with another interpreter.
AGENT_PATH = Path(__file__).resolve().with_name("agent.py")
# The agent's --config file, written beside its inputs (not a run's config.json: edgekd.run owns that name).
AGENT_OPTIONS = "agent-options.json"
