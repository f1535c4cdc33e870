"""The models: students built for a target's op set, teachers, and everything that reads or costs them.

- `blocks`: the op choices (activation, pooling, head) each declaring its ONNX ops, and the blocks;
- `registry`: the models, `TEACHERS`, `STUDENTS`, `create_teacher`, `create_student`;
- `cost`: parameters and multiply-adds (MACs) counted on a real forward pass;
- `to_onnx`: the one torch → ONNX call, and the in-memory proto the op audit reads;
- `foreign`: teachers from outside edgekd (torchvision, timm, TorchScript, ONNX files) and the teacher's view;
- `checkpoints`: edgekd's .pt format, loaded with `weights_only=True`.

The names below are the package's public face (`from edgekd.models import create_student`); `foreign`
and `checkpoints` are imported by their own module names.
"""

from edgekd.models.blocks import ACTIVATIONS, BLOCKS, HEADS, POOLS, Ops  # noqa: F401
from edgekd.models.cost import (  # noqa: F401
    count_params,
    forward_macs,
    layer_macs,
    model_cost,
    model_mflops,
    teacher_costs,
    teachers_for_data,
)
from edgekd.models.registry import (  # noqa: F401
    STEM_TARGET,
    STUDENTS,
    TEACHERS,
    Classifier,
    create_student,
    create_teacher,
    stem_stride_for,
    student_kwargs,
    student_net,
)
from edgekd.models.to_onnx import node_module, onnx_proto, write_onnx  # noqa: F401
