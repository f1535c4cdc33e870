"""Helpers shared by the test files: builders of inputs (ONNX models, data files, image folders,
synthetic run folders), the shared tiny run, and folder snapshots.

Test files import from here (`from helpers.fs import snapshot`), never from another test file:
tests/test_layout.py fails on `from test_x import ...`. pytest puts tests/ on sys.path (rootdir
conftest, "prepend" import mode), which makes this package importable as `helpers`.
"""
