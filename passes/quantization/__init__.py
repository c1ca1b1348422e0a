"""Quantization family: passes over QDQ (QuantizeLinear/DequantizeLinear) graphs.
Calibration and QDQ insertion live in `compiler/quantize.py` (they need data)."""

from .hoist import HoistQuantize  # noqa: F401
from .integer import Int8Compute  # noqa: F401
from .saturation import DropSaturatedClips  # noqa: F401
