"""Every default edgekd uses, in one place. CLI options and API keywords read these."""

from __future__ import annotations

from pathlib import Path

# data
DATA = "digits"
DATA_DIR = Path("data")        # read when no --data-dir is given (then also the system folder below)
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")   # Debian's dataset-fashion-mnist
SPLIT_SEED = 0                 # the train/val/test split never changes with --seeds
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)   # train, val, test (stratified)
BATCH_SIZE = 64
IN_MEMORY_BYTES = 1 << 30      # an ImageFolder whose decoded uint8 pixels fit this is decoded once and held in memory
# imagefolder's default size: the images' own H×W, scaled down (aspect kept) to at most this many pixels
INPUT_PIXELS = 32 * 32
RESIZE = "stretch"             # imagefolder: stretch | pad | crop (how an image becomes H×W; see edgekd.data.Fit)
RESIZES = ("stretch", "pad", "crop")   # = edgekd.data.RESIZE_POLICIES (tests/test_options.py)
PAD_FILL = 0                   # --resize pad: the raw pixel value of the padding (0 = black)
UNLABELED_HOLDOUT = 0.1        # --unlabeled: this share of the pool is held out to score agreement with the teacher
NUM_WORKERS = -1               # DataLoader workers for streamed datasets; -1: cores - 2 (0 on 2 cores), at most 4
# In-memory datasets skip the DataLoader: batches are cut from tensors (edgekd.train.datasets.take).

# models (for small data and inputs; `recipe` below scales them with the data)
TEACHER = "cnn"
STUDENT = "small-cnn"

# distillation
# DIST + CE (Huang et al. 2022: Pearson correlation of the softened probabilities, per sample and per class,
# tau = T): chosen over Hinton's KD (`soft:0.7 ce:0.3`) by measurement on the datasets that travel
# (benchmarks/README.md, "Choosing the default method"): never below the student alone beyond spread there,
# and above Hinton on the 16x16 RGB re-encoding and with 1% of Fashion-MNIST's labels.
METHODS = ("dist:1.0", "ce:1.0")
HINTON = ("soft:0.7", "ce:0.3")   # the course's KD (w_soft * KL * T^2 + w_ce * CE): the default before issue 22
TEMPERATURE = 4.0
# modern logit losses (edgekd.train.losses): the papers' settings
DKD_ALPHA = 1.0                # DKD (Zhao et al. 2022): target-class term weight
DKD_BETA = 8.0                 # non-target-class term weight (CIFAR-100 setting)
# DKD's warm-up of its weight is 20 of 240 epochs in mdistiller; edgekd's runs are 4-30 epochs, so the
# warm-up is this fraction of the run's optimizer steps (a linear ramp), whatever the run's length.
DKD_WARMUP = 20 / 240
DIST_BETA = 1.0                # DIST (Huang et al. 2022): inter-class (per sample) relation weight
DIST_GAMMA = 1.0               # intra-class (per class, over the batch) relation weight
EPOCHS = 30
TEACHER_EPOCHS = 15
TEACHER_MODE = "mean"          # several teachers: mean | weighted | confidence
TEACHER_MODES = ("mean", "weighted", "confidence")   # = edgekd.train.losses.COMBINE_MODES (tests/test_options.py)
PEERS = 2                      # online distillation (deep mutual learning)
TEACHER_SEED = 0               # a registry teacher's initial weights and data order, whatever ran before
SEEDS = 3
LR = 3e-3                      # at BASE_BATCH; the loop uses LR × batch / BASE_BATCH (linear scaling rule)
BASE_BATCH = 64
LR_SCHEDULE = "auto"           # auto: cosine per epoch at ≤ BASE_BATCH; warmup-cosine above it and for short runs
LR_SCHEDULES = ("auto", "cosine", "warmup-cosine", "constant")
WARMUP_EPOCHS = 1.0            # linear warm-up of warmup-cosine (Goyal et al. 2017 pair it with the linear rule)
# Runs of fewer epochs than this (Fashion-MNIST's 4-6) decay per step under `auto`: a per-epoch cosine
# over 4 epochs is 4 steps of LR; their warm-up is at most SHORT_RUN_WARMUP of the run.
SHORT_RUN_EPOCHS = 10
SHORT_RUN_WARMUP = 0.075
WEIGHT_DECAY = 1e-4
DEVICE = "auto"                # auto: CUDA when available, else CPU
PRECISION = "auto"             # auto: bf16 autocast on CUDA (fp16 where bf16 is missing), fp32 on CPU
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def channels_last_for(device: str) -> bool:
    """NHWC memory format: it won on CPU in benchmarks/bench_throughput.py (edgekd's loop ×1.29 teacher,
    ×1.34 student at batch 64) and is what CUDA tensor cores read; on for every device."""
    return True
LABELED_FRACTION = 1.0

# ---------------------------------------------------------------- teachers from outside (check-teacher)
TEACHER_OUTPUTS = "auto"       # auto | logits | probabilities | log-probabilities (auto: last op + a sample)
TEACHER_OUTPUT_KINDS = ("auto", "logits", "probabilities", "log-probabilities")   # = edgekd.models.foreign.OUTPUT_KINDS
PROB_FLOOR = 1e-30             # probabilities become log(max(p, PROB_FLOOR)) before any logit loss
CHECK_MAX_IMAGES = 2000        # check-teacher scores the teacher on at most this many labeled images
CHECK_TIMING_RUNS = 20         # check-teacher's host p50: at least this many batch-1 runs...
CHECK_TIMING_SECONDS = 0.5     # ...and at least this long
CLASS_ORDER_GAIN = 0.2         # another class order is named when it agrees with the labels this much more
CHANCE_FACTOR = 2.0            # a teacher within this factor of chance (1/classes) is flagged
LABEL_FREE_METHODS = ("soft:1.0",)   # --labeled-fraction 0 without --method: soft KD alone (ce needs labels)

# ---------------------------------------------------------------- the data-dependent rule
# distill reads these through `recipe` for every option left unset (None in DistillConfig).
LARGE_INPUT = 28              # inputs at least this big (min of H, W) get the early-downsampling teacher
TEACHER_LARGE = "resnet-s"    # strided ResNet-style: 75 MFLOPs at 28x28 where `cnn` needs 695
LARGE_DATA = 10_000           # train sets at least this big get the wider student (and so do large inputs)
STUDENT_LARGE = "wide-cnn"    # 59k params, as Zalando's 2-conv baselines (< 100k); small-cnn has 7.5k
# Inputs above this (an ImageFolder read with --input-size 64..1024) get a student with a strided stem,
# whose MACs don't grow with the square of the input (README, "Realistic images").
STRIDED_INPUT = 32
STUDENT_STRIDED = "small-cnn-s"
# student: about this many images seen, within EPOCH_RANGE. Fashion-MNIST: 4 epochs (5 gave the same
# verdict, within spread, and made the default pipeline 34 min where the goal is 30).
EPOCH_IMAGES = 216_000
EPOCH_RANGE = (3, EPOCHS)
TEACHER_EPOCH_IMAGES = 216_000   # Fashion-MNIST: 4 epochs (93.3% test; ~420 images/s on 2 idle cores: ~9 min)
TEACHER_EPOCH_RANGE = (3, TEACHER_EPOCHS)


def _student(n: int, input_shape: tuple[int, ...]) -> str:
    side = min(input_shape[-2:])
    if input_shape[-2] * input_shape[-1] > STRIDED_INPUT ** 2:   # by pixels: a 16×512 strip needs a stem too
        return STUDENT_STRIDED
    return STUDENT_LARGE if n >= LARGE_DATA or side >= LARGE_INPUT else STUDENT


def recipe(*, n_train: int, input_shape: tuple[int, ...], num_classes: int) -> dict:
    """The defaults for one dataset: teacher, student, epochs, teacher_epochs, temperature, methods.

    One rule, from the size of the train set and of the input:
    - epochs are a budget of images seen (EPOCH_IMAGES), clipped to EPOCH_RANGE: the small
      sets (digits: 1,078 images) keep the 30 epochs they were tuned with, Fashion-MNIST
      (54,000) gets 4, as its teacher does; runs that short decay the LR per step (SHORT_RUN_EPOCHS);
    - inputs of LARGE_INPUT² and more get a teacher that downsamples early (TEACHER_LARGE):
      the VGG-style `cnn` keeps full resolution and trains at ~130 images/s on 2 cores;
    - train sets of LARGE_DATA and more, and inputs of LARGE_INPUT² and more, get a wider student
      (STUDENT_LARGE): there small-cnn's gap to the teacher is capacity, which no distillation loss
      closes (the capacity gap). On 5,400 Fashion-MNIST PNGs small-cnn distilled lost 1.4 points to
      small-cnn alone (benchmarks/README.md, "Defaults that travel"); every profile's budget holds wide-cnn;
    - inputs of more than STRIDED_INPUT² pixels get STUDENT_STRIDED, whose stem brings each side
      down to 16 px;
    - the loss is METHODS (DIST + CE) at T = 4, for every dataset.
    `num_classes` is accepted so that the rule can grow without changing its callers.
    """
    def clip(x: float, lo_hi: tuple[int, int]) -> int:
        return int(min(max(round(x), lo_hi[0]), lo_hi[1]))

    n = max(int(n_train), 1)
    large_input = min(input_shape[-2:]) >= LARGE_INPUT
    return {
        "teacher": TEACHER_LARGE if large_input else TEACHER,
        "student": _student(n, input_shape),
        "epochs": clip(EPOCH_IMAGES / n, EPOCH_RANGE),
        "teacher_epochs": clip(TEACHER_EPOCH_IMAGES / n, TEACHER_EPOCH_RANGE),
        "temperature": TEMPERATURE,
        "methods": METHODS,
    }


# select-teacher / select-student
SELECT_TEACHER_N = 256         # examples whose per-example gradients are scored
SELECT_TEACHER_WARMUP_STEPS = 0
SEARCH_TRIALS = 12             # candidates timed (draws the predictor skips come on top)
SEARCH_SEEDS = 1               # seeds per finalist

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
GOLDEN_SAMPLES = 128
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

# bench
RUNNER = "local"               # local | qemu | ssh://USER@HOST[:PORT]
BENCH_MIN_RUNS = 200
BENCH_MIN_SECONDS = 1.0
BENCH_WARMUP = 20
THROUGHPUT_BATCHES = (1, 8, 32)

# artifacts
ARTIFACTS = Path("artifacts")
# The repository's profiles (a source checkout); a wheel carries them as edgekd._profiles.
TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"

# report
REPORT_FILE = "report.html"                   # edgekd report RUN → RUN/report.html
REPORT_COMPARE_FILE = "report-compare.html"   # edgekd report A B → artifacts/report-compare.html
