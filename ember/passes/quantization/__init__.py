"""Quantization family: passes over QDQ (QuantizeLinear/DequantizeLinear) graphs.
Calibration and QDQ insertion live in `compiler/quantize.py` (they need data)."""

from ember.passes.quantization.hoist import HoistQuantize  # noqa: F401
from ember.passes.quantization.integer import Int8Compute  # noqa: F401
from ember.passes.quantization.saturation import DropSaturatedClips  # noqa: F401
