# float32 deformable attention, PyTorch version without the CUDA kernel
from . import deformable_attention  # noqa: F401,E402
from .backbones import *  # noqa: F401,F403
from .decode_heads import *  # noqa: F401,F403
from .necks import *  # noqa: F401,F403
from .segmentors import *  # noqa: F401,F403
