"""float32 exp, sigmoid and tanh as plain arithmetic, so loops over them vectorize.

TVM lowers `tirx.exp` (and sigmoid, tanh, which it builds on it) to `llvm.exp.f32`, which LLVM
turns into one scalar libm call per element: an elementwise SiLU epilogue then cost a convolution
three times its GEMM. These are TIR expressions of +, *, selects and bit casts; kernels
and legalizations (`pipeline/cpu.py`) build on them. NaN stays NaN in each.
"""

from __future__ import annotations

from tvm import tirx

_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
             5.0000001201e-1)  # Cephes expf
_EXP_HI, _EXP_LO = 88.3762626647949, -87.3365447504  # float32's overflow, and its smallest normal
# Eigen's (and TVM's fast_tanh's) rational tanh: x P(x^2) / Q(x^2) on [-9, 9], 1 ulp of 1 beyond
_TANH_P = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
           1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)
_TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)


def f32(v):
    return tirx.const(v, "float32")


def _is_nan(x):
    # from its bits: TVM simplifies x != x away, and tirx.isnan does not vectorize
    return (tirx.reinterpret("int32", x) & tirx.const(0x7FFFFFFF, "int32")) > tirx.const(0x7F800000, "int32")


def _horner(v, coefficients):
    p = f32(coefficients[0])
    for c in coefficients[1:]:
        p = p * v + f32(c)
    return p


def exp_f32(x):
    """e^x, Cephes' expf (within 2 ulp): x = n ln2 + r, a degree-7 polynomial for e^r,
    2^n written into the exponent bits. e^x is 0 below -87.3 (float32 normals) and inf
    above 88.4."""
    c = tirx.max(tirx.min(x, f32(_EXP_HI)), f32(_EXP_LO))
    n = tirx.floor(c * f32(1.44269504088896341) + f32(0.5))
    r = c - n * f32(0.693359375) - n * f32(-2.12194440e-4)
    p = _horner(r, _EXP_POLY)
    e = (p * r * r + r + f32(1.0)) * tirx.reinterpret("float32", (n.astype("int32") + 127) << 23)
    e = tirx.Select(x > f32(_EXP_HI), f32(float("inf")), tirx.Select(x < f32(_EXP_LO), f32(0.0), e))
    return tirx.Select(_is_nan(x), x, e)


def sigmoid_f32(x):
    """1 / (1 + e^-x): 0 where e^-x overflows, 1 where it underflows."""
    return f32(1.0) / (f32(1.0) + exp_f32(-x))


def tanh_f32(x):
    """tanh x, Eigen's rational approximation on [-9, 9] (float32 rounds tanh to +-1 beyond)."""
    c = tirx.max(tirx.min(x, f32(9.0)), f32(-9.0))
    c2 = c * c
    t = c * _horner(c2, _TANH_P) / _horner(c2, _TANH_Q)
    return tirx.Select(_is_nan(x), x, t)
