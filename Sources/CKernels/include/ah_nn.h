// Neural-network kernels for the Stable Diffusion runtime: the memory-bound and
// transcendental-heavy steps around the GEMMs (softmax rows, GELU/GEGLU, SiLU, norm
// statistics and affine maps). Single-threaded over the range they are given: callers
// split the work across cores. Each kernel has a portable C version and an AVX2+FMA
// version chosen at run time (same dispatch level as the conversions: AH_DISPATCH_AVX2_F16C
// and above), so the library still runs on baseline x86-64.
//
// Accuracy: exp is a Cephes-style polynomial (≤ 2 ulp over the normal range; inputs below
// −87.3 give exactly 0, never a subnormal); erf is Abramowitz–Stegun 7.1.26 (absolute error
// ≤ 1.5e−7, the same formula as PyTorch's vectorized CPU erf, which its exact GELU uses).
#ifndef ADAPTERHOST_AH_NN_H
#define ADAPTERHOST_AH_NN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// In place, for each of `rows` rows of `length` floats (row r at x + r·ld):
/// x ← exp(x − max(x)) / Σ exp(x − max(x)).
void ah_nn_softmax_rows(float *x, size_t rows, size_t length, size_t ld);

/// y = x·sigmoid(x) = x / (1 + e^−x), `n` elements (y may equal x).
void ah_nn_silu(const float *x, float *y, size_t n);

/// Exact-form GELU: y = x/2 · (1 + erf(x/√2)), `n` elements (y may equal x).
void ah_nn_gelu(const float *x, float *y, size_t n);

/// GEGLU (diffusers' `GEGLU`): for `rows` rows of the projection `in` (row length 2·width,
/// hidden half first, gate half second): out[r, j] = in[r, j] · gelu(in[r, width + j]).
/// `out` rows are `width` long (contiguous).
void ah_nn_geglu(const float *in, float *out, size_t rows, size_t width);

/// Σx and Σx² of `n` floats, accumulated in double.
void ah_nn_moments(const float *x, size_t n, double *sum, double *sum_squares);

/// y = x·scale + shift over `n` floats, then SiLU when `silu` is nonzero (y may equal x).
void ah_nn_affine(const float *x, float *y, size_t n, float scale, float shift, int silu);

/// LayerNorm of `rows` rows of `width` floats (contiguous rows): y = (x − mean)/√(var + eps)·γ + β,
/// biased variance, two passes (mean first) for accuracy. `gamma`/`beta` may be NULL (1 / 0).
void ah_nn_layernorm_rows(const float *x, float *y, size_t rows, size_t width,
                          const float *gamma, const float *beta, float eps);

/// y[i] += x[i] over `n` floats.
void ah_nn_add_inplace(float *y, const float *x, size_t n);

/// Keys packed for `ah_nn_attention_rows`: panels of 16 keys, each d × 16 floats,
/// kt[(p·d + t)·16 + i] = k[(16p + i)·ks + t] (0 past the m keys). Holds ⌈m/16⌉·16·d floats.
/// The score kernel then reads each panel front to back (no large strides).
void ah_nn_pack_keys(const float *k, size_t ks, size_t m, size_t d, float *kt);

/// Fused attention for `rows` queries of one head: out[i] = softmax(scale·q[i]·Kᵀ)·V, without
/// materialising more than 6 score rows. q rows at q + i·qs (d wide); keys packed in `kt`
/// (ah_nn_pack_keys, m keys); values at v + j·vs (dv wide; contiguous rows stream best);
/// out rows at out + i·os. `causal_offset` ≥ 0 masks keys j > causal_offset + i (−1: no mask).
/// `scratch` holds ≥ 6·⌈m/16⌉·16 floats.
void ah_nn_attention_rows(const float *q, size_t qs, size_t rows, size_t d,
                          const float *kt, size_t m,
                          const float *v, size_t vs, size_t dv,
                          float *out, size_t os, float scale, long causal_offset, float *scratch);

#ifdef __cplusplus
}
#endif
#endif
