"""Benchmarking: orchestration, runners (local, qemu, ssh) and the standalone agent."""
