"""CPU backend: numba kernels (compiled once, cached on disk with ``cache=True``), run on several
threads when the work is large enough to pay for it.

Importing this module imports numba. The dispatcher (:mod:`kernels.dispatch`) imports it only for
CPU tensors; arguments arrive checked and normalized.

Logits are handled through their raw bits: an int32 (float32) or int16 (float16 / bfloat16) flat
view of the tensor's storage plus its two strides, so every dtype, row stride and column stride
uses the same compiled code. Applying a mask never converts a value: disallowed elements receive
the bit pattern of ``-inf`` of their dtype, all-allowed words (-1) are skipped, all-disallowed
words (0) are filled, and mixed words are blended lane by lane (LLVM vectorizes this loop with
AVX2 masked stores for 32-bit elements; 16-bit elements are processed as int32 pairs when the
row is 4-byte aligned, else through a byte -> lane-mask table). The reductions (masked logsumexp, the fused sampler) read the logits once,
in blocks of 4096 columns decoded to float32 into a cache-resident scratch, run vectorized sweeps
over each block (exp and log as polynomials, which LLVM vectorizes: numba has no vector libm) and
fold the blocks online, as a GPU kernel does.

Threads: a small pool of Python threads runs the kernels (compiled ``nogil``) on row ranges, or on
column ranges of a single row; the count follows ``torch.get_num_threads()`` (and the CPU
affinity), so ``torch.set_num_threads(1)`` makes these kernels single-threaded too. No numba
threading layer is involved, so nothing here competes with torch's own OpenMP pool between calls.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types, uintp
from numba.extending import intrinsic, overload

__all__ = ["advance_states", "apply", "fill_from_states", "num_threads", "reduce"]

# Work (elements) per thread below which splitting does not pay for the pool round trip.
APPLY_MIN_PER_THREAD = 1 << 19
REDUCE_MIN_PER_THREAD = 1 << 15
# Columns per block of the one-pass reductions (3 float32 scratch rows: 48 KiB, L1/L2-resident).
REDUCE_BLOCK = 4096

_NEG_INF_BITS = {4: np.int32(-8388608), 2: np.int16(-1024)}  # float32 0xFF800000, float16 0xFC00
_NEG_INF_BF16 = np.int16(-128)  # bfloat16 0xFF80
_BIT = np.array([np.uint32(1 << b).view(np.int32) for b in range(32)], dtype=np.int32)
_EXPAND16 = np.array([[-1 if (v >> b) & 1 else 0 for b in range(8)] for v in range(256)],
                     dtype=np.int16)  # byte -> 8 lane masks
_NO_ROWS = np.empty(0, dtype=np.int64)  # "every row, in order"
_NO_PAIRS = np.empty(0, dtype=np.int32)
_PAIR_LO = np.array([np.uint32(1 << (2 * k)).view(np.int32) for k in range(16)], dtype=np.int32)
_PAIR_HI = np.array([np.uint32(1 << (2 * k + 1)).view(np.int32) for k in range(16)],
                    dtype=np.int32)
_LOW16 = np.int32(0xFFFF)
_HIGH16 = np.int32(-65536)  # 0xFFFF0000
_I0 = np.int32(0)
_M1 = 0x85EBCA6B
_M2 = 0xC2B2AE35
_LOW32 = 0xFFFFFFFF


# -- bit casts ------------------------------------------------------------------------------------


@intrinsic
def _i32_bits_to_f32(typingctx: Any, x: Any) -> Any:
    """The float32 whose bits are the low 32 bits of the integer x (numba widens int32 math to
    int64; truncating here keeps vectorized code in 32-bit lanes)."""
    if not isinstance(x, types.Integer) or x.bitwidth < 32:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        v = args[0]
        if x.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(x), codegen


@intrinsic
def _f16_bits_to_f32(typingctx: Any, x: Any) -> Any:
    if not isinstance(x, types.Integer) or x.bitwidth != 16:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(x), codegen


def _to_f32(v, is_bf16):  # pragma: no cover - replaced by the overload (no annotations: numba)
    raise NotImplementedError


@overload(_to_f32, inline="always")
def _to_f32_overload(v, is_bf16):
    if isinstance(v, types.Integer) and v.bitwidth == 32:
        return lambda v, is_bf16: _i32_bits_to_f32(v)
    if isinstance(v, types.Integer) and v.bitwidth == 16:

        def impl(v, is_bf16):
            if is_bf16:
                return _i32_bits_to_f32(np.int32((np.int64(v) & 0xFFFF) << 16))
            return _f16_bits_to_f32(v)

        return impl
    return None


# -- apply --------------------------------------------------------------------------------------


@njit(inline="always")
def _apply_row_contig(x: Any, words: Any, vocab: int, c_lo: int, c_hi: int, neg: Any) -> None:
    # Unsigned indices: numba then emits no negative-index wraparound, and LLVM vectorizes the
    # 32-lane blend (with signed loop bounds from arguments it did not: 40x slower).
    full_hi = max(c_lo, min(c_hi, (vocab >> 5) << 5))
    for w in range(uintp(c_lo >> 5), uintp(full_hi >> 5)):
        word = words[w]
        if word == -1:
            continue
        base = w << uintp(5)
        if word == 0:
            for b in range(uintp(32)):
                x[base + b] = neg
        else:
            for b in range(uintp(32)):
                x[base + b] = x[base + b] if (word & _BIT[b]) != 0 else neg
    for j in range(full_hi, min(c_hi, vocab)):
        if (words[j >> 5] & _BIT[j & 31]) == 0:
            x[j] = neg
    for j in range(uintp(max(c_lo, vocab)), uintp(c_hi)):
        x[j] = neg


@njit(inline="always")
def _apply_row_contig16(x: Any, words: Any, vocab: int, c_lo: int, c_hi: int, neg: Any) -> None:
    # 16-bit elements: a select on 16-bit lanes driven by 32-bit bit tests did not vectorize, so
    # each byte of the word is expanded through a 256-entry table into 8 lane masks (0 / -1) and
    # blended with bitwise ops: (x & m) | (neg & ~m).
    full_hi = max(c_lo, min(c_hi, (vocab >> 5) << 5))
    for w in range(uintp(c_lo >> 5), uintp(full_hi >> 5)):
        word = words[w]
        if word == -1:
            continue
        base = w << uintp(5)
        if word == 0:
            for b in range(uintp(32)):
                x[base + b] = neg
        else:
            for q in range(uintp(4)):
                lanes = _EXPAND16[(word >> (q * uintp(8))) & 0xFF]
                o = base + q * uintp(8)
                for b in range(uintp(8)):
                    m = lanes[b]
                    x[o + b] = (x[o + b] & m) | (neg & ~m)
    for j in range(full_hi, min(c_hi, vocab)):
        if (words[j >> 5] & _BIT[j & 31]) == 0:
            x[j] = neg
    for j in range(uintp(max(c_lo, vocab)), uintp(c_hi)):
        x[j] = neg


@njit(inline="always")
def _apply_row_pairs(x: Any, x32: Any, words: Any, vocab: int, c_lo: int, c_hi: int, neg: Any,
                     neg2: Any) -> None:
    # 16-bit elements in a 4-byte aligned row, handled as int32 pairs (tokens 2k, 2k+1 in the
    # low and high halves): the same 32-bit lane arithmetic as float32, 16 pairs per word.
    full_hi = max(c_lo, min(c_hi, (vocab >> 5) << 5))
    for w in range(uintp(c_lo >> 5), uintp(full_hi >> 5)):
        word = words[w]
        if word == -1:
            continue
        base = w << uintp(4)
        if word == 0:
            for k in range(uintp(16)):
                x32[base + k] = neg2
        else:
            for k in range(uintp(16)):
                m = ((_LOW16 if (word & _PAIR_LO[k]) != 0 else _I0)
                     | (_HIGH16 if (word & _PAIR_HI[k]) != 0 else _I0))
                x32[base + k] = (x32[base + k] & m) | (neg2 & ~m)
    for j in range(full_hi, min(c_hi, vocab)):
        if (words[j >> 5] & _BIT[j & 31]) == 0:
            x[j] = neg
    for j in range(uintp(max(c_lo, vocab)), uintp(c_hi)):
        x[j] = neg


@njit(inline="always")
def _apply_strided(flat: Any, base: int, s1: int, words: Any, vocab: int, c_lo: int, c_hi: int,
                   neg: Any) -> None:
    for j in range(c_lo, c_hi):
        if j >= vocab or (words[j >> 5] & _BIT[j & 31]) == 0:
            flat[base + j * s1] = neg


@njit(cache=True, nogil=True, boundscheck=False)
def _apply_kernel(
    flat: Any, s0: int, s1: int, rows: Any, bitmask: Any, vocab: int, width: int,
    k_lo: int, k_hi: int, c_lo: int, c_hi: int, neg: Any,
) -> None:
    """32-bit elements: rows ``rows[k]`` (or ``k`` when ``rows`` is empty) for k in [k_lo, k_hi),
    columns [c_lo, c_hi) (c_lo a multiple of 32)."""
    for k in range(k_lo, k_hi):
        r = rows[k] if rows.shape[0] > 0 else k
        base = r * s0
        if s1 == 1:
            _apply_row_contig(flat[base:base + width], bitmask[r], vocab, c_lo, c_hi, neg)
        else:
            _apply_strided(flat, base, s1, bitmask[r], vocab, c_lo, c_hi, neg)


@njit(cache=True, nogil=True, boundscheck=False)
def _apply_kernel16(
    flat: Any, s0: int, s1: int, rows: Any, bitmask: Any, vocab: int, width: int,
    k_lo: int, k_hi: int, c_lo: int, c_hi: int, neg: Any, flat32: Any, neg2: Any,
) -> None:
    """16-bit elements (float16, bfloat16); as :func:`_apply_kernel`. ``flat32`` is ``flat``
    viewed as int32 pairs when ``flat`` starts 4-byte aligned (else empty); rows starting at an
    even element use it."""
    for k in range(k_lo, k_hi):
        r = rows[k] if rows.shape[0] > 0 else k
        base = r * s0
        if s1 != 1:
            _apply_strided(flat, base, s1, bitmask[r], vocab, c_lo, c_hi, neg)
        elif flat32.shape[0] > 0 and base % 2 == 0:
            _apply_row_pairs(flat[base:base + width], flat32[base >> 1:(base + width) >> 1],
                             bitmask[r], vocab, c_lo, c_hi, neg, neg2)
        else:
            _apply_row_contig16(flat[base:base + width], bitmask[r], vocab, c_lo, c_hi, neg)


# -- one-pass reductions ----------------------------------------------------------------------
#
# Per row segment, a few vectorizable sweeps over an L2-resident scratch copy of the tempered
# row instead of one scalar loop: numba has no vector libm, so exp and log are evaluated with
# the polynomial approximations below (<= 3 ulp in float32), which LLVM vectorizes with AVX2.

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_HALF = np.float32(0.5)
_TWO = np.float32(2.0)
_NEG_INF_F32 = np.float32(-np.inf)
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # ln 2 = _LN2_HI + _LN2_LO (Cody-Waite split)
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_FLOOR = np.float32(-87.0)  # exp(x) below this is returned as 0
_E2 = np.float32(1 / 2)
_E3 = np.float32(1 / 6)
_E4 = np.float32(1 / 24)
_E5 = np.float32(1 / 120)
_E6 = np.float32(1 / 720)
_E7 = np.float32(1 / 5040)
_SQRT2 = np.float32(1.4142135623730951)
_L3 = np.float32(2 / 3)
_L5 = np.float32(2 / 5)
_L7 = np.float32(2 / 7)
_L9 = np.float32(2 / 9)
_U_SCALE = np.float32(1.0 / 16777216.0)
_KEY_SALT = 0x7F4A7C15  # kernels.torch_ref.RNG_KEY_SALT


@intrinsic
def _f32_to_i32_bits(typingctx: Any, x: Any) -> Any:
    if x != types.float32:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(x), codegen


@njit(inline="always")
def _exp_nonpos(x: Any) -> Any:
    """exp(x) for float32 x <= 0 (``-inf`` -> 0), a degree-7 polynomial after range reduction."""
    xc = max(_EXP_FLOOR, x)
    n = np.floor(xc * _LOG2E + _HALF)
    r = (xc - n * _LN2_HI) - n * _LN2_LO
    p = _F1 + r * (_F1 + r * (_E2 + r * (_E3 + r * (_E4 + r * (_E5 + r * (_E6 + r * _E7))))))
    scale = _i32_bits_to_f32(np.int32((np.int32(n) + 127) << 23))
    return p * scale if x > _EXP_FLOOR else _F0


@njit(inline="always")
def _log_pos(x: Any) -> Any:
    """log(x) for normal float32 x > 0: exponent plus 2 atanh(s) series of the mantissa."""
    bits = _f32_to_i32_bits(x)
    e = (bits >> 23) - 127
    m = _i32_bits_to_f32(np.int32((bits & 0x7FFFFF) | 0x3F800000))
    big = m > _SQRT2
    m = m * _HALF if big else m
    e = e + 1 if big else e
    f = m - _F1
    s = f / (_TWO + f)
    s2 = s * s
    poly = s * _TWO + s * s2 * (_L3 + s2 * (_L5 + s2 * (_L7 + s2 * _L9)))
    ef = np.float32(np.int32(e))  # via int32: AVX2 has no vector int64 -> float conversion
    return ef * _LN2_HI + (ef * _LN2_LO + poly)


@intrinsic
def _fmix32(typingctx: Any, h: Any) -> Any:
    """MurmurHash3's fmix32 of the low 32 bits of the integer h, zero-extended to int64.

    Written in LLVM IR on i32 (numba would widen every step to int64, and AVX2 has no 64-bit
    vector multiply): the hash vectorizes in 32-bit lanes."""
    if not isinstance(h, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        v = args[0]
        if h.bitwidth > 32:
            v = builder.trunc(v, i32)
        elif h.bitwidth < 32:
            v = builder.zext(v, i32)
        for shift, mult in ((16, _M1), (13, _M2)):
            v = builder.xor(v, builder.lshr(v, ir.Constant(i32, shift)))
            v = builder.mul(v, ir.Constant(i32, mult))
        v = builder.xor(v, builder.lshr(v, ir.Constant(i32, 16)))
        return builder.zext(v, ir.IntType(64))

    return types.int64(h), codegen


@njit(inline="always")
def _gumbel(j: int, key_a: int, key_b: int) -> Any:
    """The Gumbel noise of column j (kernels.torch_ref.gumbel), in float32."""
    h = _fmix32(_fmix32(j ^ key_a) ^ key_b)
    u = (np.float32(np.int32(h >> 8)) + _HALF) * _U_SCALE
    return -_log_pos(-_log_pos(u))


@njit(nogil=True, boundscheck=False, fastmath={"reassoc", "nsz"})
def _sum(buf: Any, n: int) -> float:
    total = 0.0
    for i in range(uintp(n)):
        total += np.float64(buf[i])
    return total


@njit(nogil=True, boundscheck=False, fastmath={"nnan", "nsz"})
def _max(buf: Any, n: int) -> Any:
    top = _NEG_INF_F32
    for i in range(uintp(n)):
        top = max(top, buf[i])
    return top


@njit(inline="always")
def _first(buf: Any, n: int, value: Any) -> int:
    for i in range(n):
        if buf[i] == value:
            return i
    return -1


@njit(inline="always")
def _online(m: Any, s: float, m_c: Any, s_c: float) -> tuple:
    """Fold a block's (max, sum of exp(x - max)) into the running pair; -inf-safe."""
    if m_c == _NEG_INF_F32:
        return m, s
    if m == _NEG_INF_F32:
        return m_c, s_c
    if m_c > m:
        return m_c, s * math.exp(np.float64(m) - np.float64(m_c)) + s_c
    return m, s + s_c * math.exp(np.float64(m_c) - np.float64(m))


@njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")  # no ZeroDivision branch
def _reduce_kernel(
    flat: Any, s0: int, s1: int, is_bf16: bool, bitmask: Any, vocab: int,
    temps: Any, seeds: Any, step_key: int, sample: bool, normalize: bool,
    r_lo: int, r_hi: int, c_lo: int, c_hi: int, part: int, scratch: Any,
    m_all_out: Any, s_all_out: Any, m_ok_out: Any, s_ok_out: Any, best_out: Any, tok_out: Any,
) -> None:
    """Columns [c_lo, c_hi) of rows [r_lo, r_hi): one read of the logits, in blocks of
    ``scratch.shape[1]`` columns (a multiple of 32) that stay in L1/L2 while a few vectorized
    sweeps run over them; blocks are folded online (running max and rescaled sums)."""
    block = scratch.shape[1]
    z = scratch[0]
    z_ok = scratch[1]
    tmp = scratch[2]
    for r in range(r_lo, r_hi):
        t = temps[r]
        greedy = t == 0
        t_div = _F1 if greedy else t
        words = bitmask[r]
        key_a = 0
        key_b = 0
        if sample and not greedy:
            seed = seeds[r]
            key_a = _fmix32((seed & _LOW32) ^ _fmix32(((seed >> 32) & _LOW32) ^ step_key))
            key_b = _fmix32(key_a ^ _KEY_SALT)
        m_all = _NEG_INF_F32
        s_all = 0.0
        m_ok = _NEG_INF_F32
        s_ok = 0.0
        best = _NEG_INF_F32
        tok = -1
        for a in range(c_lo, c_hi, block):
            n = min(block, c_hi - a)
            un = uintp(n)
            base = r * s0 + a * s1
            # 1. tempered logits (decoded from their bits) and their allowed copy
            if s1 == 1:
                row = flat[base:base + n]
                for i in range(un):
                    z[i] = _to_f32(row[i], is_bf16) / t_div
            else:
                for i in range(n):
                    z[i] = _to_f32(flat[base + i * s1], is_bf16) / t_div
            ok_hi = max(0, min(n, vocab - a))  # a is a multiple of 32
            ws = words[a >> 5:]
            for w in range(uintp(ok_hi >> 5)):
                word = ws[w]
                b0 = w << uintp(5)
                for b in range(uintp(32)):
                    z_ok[b0 + b] = z[b0 + b] if (word & _BIT[b]) != 0 else _NEG_INF_F32
            for i in range((ok_hi >> 5) << 5, ok_hi):
                z_ok[i] = z[i] if (ws[i >> 5] & _BIT[i & 31]) != 0 else _NEG_INF_F32
            for i in range(uintp(ok_hi), un):
                z_ok[i] = _NEG_INF_F32
            # 2. block maxima and sums of exp(z - max). Chunks of 32 columns whose bitmask word
            # is 0 are skipped (sparse masks are the common case under a grammar); chunks past
            # the bitmask's words are all disallowed.
            n_chunks = n >> 5
            n_words = max(0, min(n_chunks, ws.shape[0]))
            m_c = _max(z_ok, n)
            if m_c > _NEG_INF_F32:
                for w in range(uintp(n_chunks)):
                    b0 = w << uintp(5)
                    if w >= n_words or ws[w] == 0:
                        for b in range(uintp(32)):
                            tmp[b0 + b] = _F0
                    else:
                        for b in range(uintp(32)):
                            tmp[b0 + b] = _exp_nonpos(z_ok[b0 + b] - m_c)
                for i in range(n_chunks << 5, n):
                    tmp[i] = _exp_nonpos(z_ok[i] - m_c)
                m_ok, s_ok = _online(m_ok, s_ok, m_c, _sum(tmp, n))
            if normalize:
                m_c2 = _max(z, n)
                if m_c2 > _NEG_INF_F32:
                    for i in range(un):
                        tmp[i] = _exp_nonpos(z[i] - m_c2)
                    m_all, s_all = _online(m_all, s_all, m_c2, _sum(tmp, n))
            # 3. Gumbel-max over the allowed tokens: the first maximal column (strict > across
            # blocks keeps the earliest on ties)
            if sample and m_c > _NEG_INF_F32:
                if greedy:
                    b_best = m_c
                    b_tok = a + _first(z_ok, n, m_c)
                else:
                    for w in range(uintp(n_chunks)):
                        b0 = w << uintp(5)
                        if w >= n_words or ws[w] == 0:
                            for b in range(uintp(32)):
                                tmp[b0 + b] = _NEG_INF_F32
                        else:
                            for b in range(uintp(32)):
                                zi = z_ok[b0 + b]
                                g = _gumbel(np.int64(a + b0 + b), key_a, key_b)
                                tmp[b0 + b] = zi + g if zi > _NEG_INF_F32 else _NEG_INF_F32
                    for i in range(n_chunks << 5, n):
                        zi = z_ok[i]
                        g = _gumbel(np.int64(a + i), key_a, key_b)
                        tmp[i] = zi + g if zi > _NEG_INF_F32 else _NEG_INF_F32
                    b_best = _max(tmp, n)
                    b_tok = a + _first(tmp, n, b_best)
                if b_best > best:
                    best = b_best
                    tok = b_tok
        m_all_out[r, part] = m_all
        s_all_out[r, part] = s_all
        m_ok_out[r, part] = m_ok
        s_ok_out[r, part] = s_ok
        best_out[r, part] = best
        tok_out[r, part] = tok


@njit(inline="always")
def _merge(m: Any, s: Any) -> float:
    """log(sum_p s_p * exp(m_p)) over the parts; -inf when every part is empty."""
    top = -np.inf
    for p in range(m.shape[0]):
        top = max(top, m[p])
    if top == -np.inf:
        return -np.inf
    total = 0.0
    for p in range(m.shape[0]):
        if m[p] > -np.inf:
            total += s[p] * math.exp(m[p] - top)
    return top + math.log(total)


@njit(cache=True, nogil=True, boundscheck=False)
def _combine_kernel(
    temps: Any, sample: bool, normalize: bool, m_all: Any, s_all: Any, m_ok: Any, s_ok: Any,
    best: Any, tok: Any, out: Any, token: Any,
) -> None:
    for r in range(out.shape[0]):
        lse_ok = _merge(m_ok[r], s_ok[r])
        if normalize:
            if temps[r] == 0:
                top_all = -np.inf
                top_ok = -np.inf
                for p in range(m_all.shape[1]):
                    top_all = max(top_all, m_all[r, p])
                    top_ok = max(top_ok, m_ok[r, p])
                out[r] = 0.0 if (top_ok == top_all and top_ok > -np.inf) else -np.inf
            elif lse_ok == -np.inf:
                out[r] = -np.inf
            else:
                out[r] = lse_ok - _merge(m_all[r], s_all[r])
        else:
            out[r] = lse_ok
        if sample:
            b = np.float32(-np.inf)
            t = -1
            for p in range(best.shape[1]):  # parts in column order; strict > keeps the first
                if best[r, p] > b:
                    b = best[r, p]
                    t = tok[r, p]
            token[r] = t


# -- regular constraints -----------------------------------------------------------------------


@njit(cache=True, nogil=True, boundscheck=False)
def _fill_kernel(table: Any, states: Any, out: Any) -> None:
    n_states = table.shape[0]
    for b in range(states.shape[0]):
        s = states[b]
        if 0 <= s < n_states:
            out[b, :] = table[s, :]
        else:
            out[b, :] = 0


@njit(cache=True, nogil=True, boundscheck=False)
def _advance_kernel(trans: Any, states: Any, tokens: Any, out: Any) -> None:
    n_states, vocab = trans.shape
    for b in range(states.shape[0]):
        s = states[b]
        t = tokens[b]
        if 0 <= s < n_states and 0 <= t < vocab:
            out[b] = trans[s, t]
        else:
            out[b] = -1


# -- host side ------------------------------------------------------------------------------------

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


_CPUS: list[int] = []


def num_threads() -> int:
    """Threads the CPU kernels may use: ``torch.get_num_threads()`` capped by the CPU affinity."""
    import torch

    if not _CPUS:
        try:
            _CPUS.append(len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            _CPUS.append(os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), _CPUS[0]))


def _run(fn: Any, tasks: list[tuple[Any, ...]]) -> None:
    """Run ``fn(*task)`` for every task: the first on this thread, the rest on the pool."""
    global _POOL, _POOL_SIZE
    if len(tasks) == 1:
        fn(*tasks[0])
        return
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < len(tasks) - 1:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL_SIZE = len(tasks) - 1
            _POOL = ThreadPoolExecutor(_POOL_SIZE, thread_name_prefix="kernels-cpu")
        pool = _POOL
    futures = [pool.submit(fn, *task) for task in tasks[1:]]
    fn(*tasks[0])
    for f in futures:
        f.result()


def _splits(n_rows: int, width: int, min_per_thread: int) -> tuple[list[tuple[int, int]],
                                                                    list[tuple[int, int]]]:
    """Row ranges and column ranges (column bounds multiples of 32): one of them has one range."""
    threads = max(1, (n_rows * width) // min_per_thread)
    if threads > 1:
        threads = min(threads, num_threads())
    if threads <= 1:
        return [(0, n_rows)], [(0, width)]
    if n_rows >= threads:
        step = -(-n_rows // threads)
        return [(i, min(i + step, n_rows)) for i in range(0, n_rows, step)], [(0, width)]
    step = -(-width // threads)
    step = -(-step // 32) * 32
    return [(0, n_rows)], [(c, min(c + step, width)) for c in range(0, width, step)]


def _flat(t: Any) -> tuple[Any, int, int]:
    """A 1-D numpy view of the raw bits (int32 or int16) spanning a 2-D tensor, and its strides."""
    import torch

    rows, width = t.shape
    s0, s1 = t.stride()
    raw = torch.int32 if t.element_size() == 4 else torch.int16
    if t.requires_grad:
        t = t.detach()
    if s1 == 1 and (s0 == width or rows == 1):
        return t.view(raw).numpy().reshape(-1), s0, s1
    span = (rows - 1) * s0 + (width - 1) * s1 + 1
    return t.as_strided((span,), (1,), t.storage_offset()).view(raw).numpy(), s0, s1


def apply(logits: Any, bitmask: Any, rows: Any, vocab: int) -> None:
    """Set disallowed logits to -inf in place (contract in :func:`kernels.apply_token_bitmask_inplace`)."""
    import torch

    batch, width = logits.shape
    n = batch if rows is None else rows.numel()
    if n == 0 or width == 0:
        return
    flat, s0, s1 = _flat(logits)
    neg = _NEG_INF_BF16 if logits.dtype == torch.bfloat16 else _NEG_INF_BITS[logits.element_size()]
    row_ids = _NO_ROWS if rows is None else rows.numpy()
    bm = bitmask.numpy()
    if logits.element_size() == 4:
        kernel: Any = _apply_kernel
        extra: tuple[Any, ...] = ()
    else:
        kernel = _apply_kernel16
        even = flat.shape[0] - flat.shape[0] % 2
        aligned = flat.__array_interface__["data"][0] % 4 == 0
        flat32 = flat[:even].view(np.int32) if aligned else _NO_PAIRS
        extra = (flat32, np.int32((int(neg) & 0xFFFF) * 0x10001 - (1 << 32)))
    if n * width < 2 * APPLY_MIN_PER_THREAD:  # the common small case: no split, no pool
        kernel(flat, s0, s1, row_ids, bm, vocab, width, 0, n, 0, width, neg, *extra)
        return
    row_ranges, col_ranges = _splits(n, width, APPLY_MIN_PER_THREAD)
    tasks = [(flat, s0, s1, row_ids, bm, vocab, width, r0, r1, c0, c1, neg, *extra)
             for r0, r1 in row_ranges for c0, c1 in col_ranges]
    _run(kernel, tasks)


def reduce(
    logits: Any,
    bitmask: Any,
    vocab: int,
    temperature: Any,
    *,
    normalize: bool,
    seeds: Any = None,
    step: int = 0,
) -> tuple[Any, Any]:
    """(token or None, float32 result) per row; contracts in :func:`kernels.masked_logsumexp` and
    :func:`kernels.sample_constrained`."""
    import torch

    from kernels.torch_ref import MASK32, RNG_STEP_SALT

    batch, width = logits.shape
    out = torch.empty(batch, dtype=torch.float32)
    sample = seeds is not None
    token = torch.empty(batch, dtype=torch.int64) if sample else None
    if batch == 0:
        return token, out
    if width == 0:
        out.fill_(float("-inf"))
        if token is not None:
            token.fill_(-1)
        return token, out
    normalize = normalize or sample
    seeds_np = seeds.numpy() if sample else _NO_ROWS
    step_key = _host_fmix32((step & MASK32) ^ RNG_STEP_SALT)
    temps = temperature.numpy()
    flat, s0, s1 = _flat(logits)
    bm = bitmask.numpy()
    row_ranges, col_ranges = _splits(batch, width, REDUCE_MIN_PER_THREAD)
    parts = len(col_ranges)
    m_all = np.empty((batch, parts), dtype=np.float32)
    s_all = np.empty((batch, parts), dtype=np.float64)
    m_ok = np.empty((batch, parts), dtype=np.float32)
    s_ok = np.empty((batch, parts), dtype=np.float64)
    best = np.empty((batch, parts), dtype=np.float32)
    tok = np.empty((batch, parts), dtype=np.int64)
    is_bf16 = logits.dtype == torch.bfloat16
    tasks = [(flat, s0, s1, is_bf16, bm, vocab, temps, seeds_np, step_key, sample, normalize,
              r0, r1, c0, c1, p, np.empty((3, min(REDUCE_BLOCK, c1 - c0)), dtype=np.float32),
              m_all, s_all, m_ok, s_ok, best, tok)
             for r0, r1 in row_ranges for p, (c0, c1) in enumerate(col_ranges)]
    _run(_reduce_kernel, tasks)
    token_np = token.numpy() if token is not None else _NO_ROWS
    _combine_kernel(temps, sample, normalize, m_all, s_all, m_ok, s_ok, best, tok,
                    out.numpy(), token_np)
    return token, out


def _host_fmix32(h: int) -> int:
    h &= _LOW32
    h ^= h >> 16
    h = (h * _M1) & _LOW32
    h ^= h >> 13
    h = (h * _M2) & _LOW32
    return h ^ (h >> 16)


def fill_from_states(state_masks: Any, states: Any, out: Any) -> None:
    """``out[b] = state_masks[states[b]]`` (all zero for a state outside ``[0, S)``)."""
    if out.shape[0] == 0:
        return
    _fill_kernel(state_masks.numpy(), states.numpy(), out.numpy())


def advance_states(transitions: Any, states: Any, tokens: Any, out: Any) -> None:
    """``out[b] = transitions[states[b], tokens[b]]`` (-1 when either is out of range)."""
    if out.shape[0] == 0:
        return
    _advance_kernel(transitions.numpy(), states.numpy(), tokens.numpy(), out.numpy())
