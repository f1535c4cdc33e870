"""Every default edgekd uses, in one place. CLI options and API keywords read these."""

from __future__ import annotations

from pathlib import Path

# data
DATA = "digits"
DATA_DIR = Path("data")
SPLIT_SEED = 0                 # the train/val/test split never changes with --seeds
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)   # train, val, test (stratified)
BATCH_SIZE = 64
NUM_WORKERS = 0                # DataLoader workers for streamed datasets

# models
TEACHER = "cnn"
STUDENT = "small-cnn"

# distillation
METHODS = ("soft:0.7", "ce:0.3")  # Hinton KD: w_soft * KL * T^2 + w_ce * CE
TEMPERATURE = 4.0
EPOCHS = 30
TEACHER_EPOCHS = 15
SEEDS = 3
LR = 3e-3
WEIGHT_DECAY = 1e-4
LABELED_FRACTION = 1.0

# export / parity
TARGET = "cpu-arm"
OPSET = 17
# torch → ONNX exporter. TorchScript stays the default: torch.export (dynamo) gives the same
# parity on every registered student and teacher, but writes opset 18 graphs the ONNX version
# converter cannot bring down to the profiles' opset 17 (ReduceMean's axes become an input),
# uses ReduceMean/Reshape where TorchScript writes GlobalAveragePool/Flatten (which the mobile
# profiles' tables and XNNPACK take and ReduceMean they do not all take), and takes 10-20x as
# long (benchmarks/README.md, "exporters").
EXPORTER = "torchscript"
EXPORTERS = ("torchscript", "dynamo")
PARITY_MIN_SAMPLES = 256
GOLDEN_SAMPLES = 128
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

# bench
BENCH_MIN_RUNS = 200
BENCH_MIN_SECONDS = 1.0
BENCH_WARMUP = 20
THROUGHPUT_BATCHES = (1, 8, 32)

# artifacts
ARTIFACTS = Path("artifacts")
TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"

# report
REPORT_FILE = "report.html"                   # edgekd report RUN → RUN/report.html
REPORT_COMPARE_FILE = "report-compare.html"   # edgekd report A B → artifacts/report-compare.html
