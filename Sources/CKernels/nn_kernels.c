// Neural-network kernels with runtime dispatch (see include/ah_nn.h).
//
// Layout of the file: portable C versions first (libm exp/erf: the reference), then AVX2+FMA
// versions compiled with `target` attributes (so the file builds for baseline x86-64 and the
// vector code only runs after cpu.c has seen AVX2+FMA), then the dispatching entry points.
#include "CKernels.h"
#include "ah_nn.h"
#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define AH_NN_X86 1
#endif

// Abramowitz & Stegun 7.1.26 coefficients (also PyTorch's vectorized erf).
#define ERF_P 0.3275911f
#define ERF_A1 0.254829592f
#define ERF_A2 -0.284496736f
#define ERF_A3 1.421413741f
#define ERF_A4 -1.453152027f
#define ERF_A5 1.061405429f

// MARK: - Portable versions

static void softmax_rows_portable(float *x, size_t rows, size_t length, size_t ld) {
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * ld;
        float top = -INFINITY;
        for (size_t i = 0; i < length; i++) top = row[i] > top ? row[i] : top;
        float total = 0;
        for (size_t i = 0; i < length; i++) { row[i] = expf(row[i] - top); total += row[i]; }
        float scale = 1.0f / total;
        for (size_t i = 0; i < length; i++) row[i] *= scale;
    }
}

static void silu_portable(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i]));
}

static inline float gelu_scalar(float v) { return 0.5f * v * (1.0f + erff(v * (float)M_SQRT1_2)); }

static void gelu_portable(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = gelu_scalar(x[i]);
}

static void geglu_portable(const float *in, float *out, size_t rows, size_t width) {
    for (size_t r = 0; r < rows; r++) {
        const float *hidden = in + r * 2 * width, *gate = hidden + width;
        float *o = out + r * width;
        for (size_t j = 0; j < width; j++) o[j] = hidden[j] * gelu_scalar(gate[j]);
    }
}

static void moments_portable(const float *x, size_t n, double *sum, double *sum_squares) {
    double s = 0, q = 0;
    for (size_t i = 0; i < n; i++) { double v = x[i]; s += v; q += v * v; }
    *sum = s; *sum_squares = q;
}

static void affine_portable(const float *x, float *y, size_t n, float scale, float shift, int silu) {
    if (silu) {
        for (size_t i = 0; i < n; i++) { float v = x[i] * scale + shift; y[i] = v / (1.0f + expf(-v)); }
    } else {
        for (size_t i = 0; i < n; i++) y[i] = x[i] * scale + shift;
    }
}

static void layernorm_rows_portable(const float *x, float *y, size_t rows, size_t width,
                                    const float *gamma, const float *beta, float eps) {
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * width;
        float *out = y + r * width;
        double s = 0;
        for (size_t i = 0; i < width; i++) s += row[i];
        float mean = (float)(s / (double)width);
        double q = 0;
        for (size_t i = 0; i < width; i++) { double d = (double)row[i] - mean; q += d * d; }
        float rstd = (float)(1.0 / sqrt(q / (double)width + eps));
        for (size_t i = 0; i < width; i++) {
            float v = (row[i] - mean) * rstd;
            out[i] = v * (gamma ? gamma[i] : 1.0f) + (beta ? beta[i] : 0.0f);
        }
    }
}

static void add_inplace_portable(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static void pack_keys_portable(const float *k, size_t ks, size_t m, size_t d, float *kt) {
    size_t panels = (m + 15) / 16;
    for (size_t p = 0; p < panels; p++) {
        float *panel = kt + p * d * 16;
        for (size_t i = 0; i < 16; i++) {
            size_t j = p * 16 + i;
            if (j < m) {
                const float *row = k + j * ks;
                for (size_t t = 0; t < d; t++) panel[t * 16 + i] = row[t];
            } else {
                for (size_t t = 0; t < d; t++) panel[t * 16 + i] = 0;
            }
        }
    }
}

static void attention_rows_portable(const float *q, size_t qs, size_t rows, size_t d,
                                    const float *kt, size_t m,
                                    const float *v, size_t vs, size_t dv,
                                    float *out, size_t os, float scale, long causal_offset, float *scratch) {
    float *s = scratch;
    for (size_t i = 0; i < rows; i++) {
        const float *qi = q + i * qs;
        size_t limit = m;
        if (causal_offset >= 0 && (size_t)causal_offset + i + 1 < m) limit = (size_t)causal_offset + i + 1;
        float top = -INFINITY;
        for (size_t j = 0; j < limit; j++) {
            const float *panel = kt + (j / 16) * d * 16 + j % 16;
            float dot = 0;
            for (size_t t = 0; t < d; t++) dot += qi[t] * panel[t * 16];
            s[j] = dot * scale;
            top = s[j] > top ? s[j] : top;
        }
        float total = 0;
        for (size_t j = 0; j < limit; j++) { s[j] = expf(s[j] - top); total += s[j]; }
        float inv = 1.0f / total;
        float *o = out + i * os;
        for (size_t c = 0; c < dv; c++) o[c] = 0;
        for (size_t j = 0; j < limit; j++) {
            float p = s[j];
            const float *vr = v + j * vs;
            for (size_t c = 0; c < dv; c++) o[c] += p * vr[c];
        }
        for (size_t c = 0; c < dv; c++) o[c] *= inv;
    }
}

#ifdef AH_NN_X86
// MARK: - AVX2 + FMA

#define AVX2 __attribute__((target("avx2,fma")))

/// e^x, Cephes polynomial. Inputs are clamped to [−87.3, 88]: below, the result is exactly 0
/// (never subnormal: subnormals would slow every later op); above, e^88 ≈ 1.65e38 (finite).
AVX2 static inline __m256 exp256(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f), hi = _mm256_set1_ps(88.0f);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // r = x − n·ln2 in two parts (n·C1 exact for |n| < 2^9).
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    // 2^n: n ∈ [−126, 127] after the clamp, so the exponent field stays normal.
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), y);
}

AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

AVX2 static inline float hmax256(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/// Loads the first `n` (< 8) floats of `p`, the rest `fill`.
AVX2 static inline __m256 load_partial(const float *p, size_t n, float fill) {
    float tmp[8];
    for (size_t i = 0; i < 8; i++) tmp[i] = i < n ? p[i] : fill;
    return _mm256_loadu_ps(tmp);
}

AVX2 static inline void store_partial(float *p, __m256 v, size_t n) {
    float tmp[8];
    _mm256_storeu_ps(tmp, v);
    for (size_t i = 0; i < n; i++) p[i] = tmp[i];
}

/// exp(s − max) in place over s[0, limit), zero over [limit, end); returns 1/Σ.
AVX2 static inline float softmax_row_unnormalised(float *s, size_t limit, size_t end) {
    size_t j = 0;
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0;
    for (; j + 16 <= limit; j += 16) {
        m0 = _mm256_max_ps(m0, _mm256_loadu_ps(s + j));
        m1 = _mm256_max_ps(m1, _mm256_loadu_ps(s + j + 8));
    }
    for (; j + 8 <= limit; j += 8) m0 = _mm256_max_ps(m0, _mm256_loadu_ps(s + j));
    if (j < limit) m1 = _mm256_max_ps(m1, load_partial(s + j, limit - j, -INFINITY));
    __m256 top = _mm256_set1_ps(hmax256(_mm256_max_ps(m0, m1)));
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    for (j = 0; j + 16 <= limit; j += 16) {
        __m256 e0 = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), top));
        __m256 e1 = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j + 8), top));
        _mm256_storeu_ps(s + j, e0);
        _mm256_storeu_ps(s + j + 8, e1);
        s0 = _mm256_add_ps(s0, e0);
        s1 = _mm256_add_ps(s1, e1);
    }
    for (; j + 8 <= limit; j += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), top));
        _mm256_storeu_ps(s + j, e);
        s0 = _mm256_add_ps(s0, e);
    }
    if (j < limit) {
        __m256 e = exp256(_mm256_sub_ps(load_partial(s + j, limit - j, -INFINITY), top));
        store_partial(s + j, e, limit - j);
        s1 = _mm256_add_ps(s1, e);
    }
    for (j = limit; j < end; j++) s[j] = 0;
    return 1.0f / hsum256(_mm256_add_ps(s0, s1));
}

AVX2 static void softmax_rows_avx2(float *x, size_t rows, size_t length, size_t ld) {
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * ld;
        __m256 scale = _mm256_set1_ps(softmax_row_unnormalised(row, length, length));
        size_t i = 0;
        for (; i + 8 <= length; i += 8) _mm256_storeu_ps(row + i, _mm256_mul_ps(_mm256_loadu_ps(row + i), scale));
        for (; i < length; i++) row[i] *= _mm256_cvtss_f32(scale);
    }
}

AVX2 static inline __m256 silu256(__m256 v) {
    __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), v));
    return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

AVX2 static void silu_avx2(const float *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, silu256(_mm256_loadu_ps(x + i)));
    if (i < n) store_partial(y + i, silu256(load_partial(x + i, n - i, 0)), n - i);
}

AVX2 static inline __m256 gelu256(__m256 x) {
    const __m256 sign_mask = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
    __m256 z = _mm256_mul_ps(x, _mm256_set1_ps((float)M_SQRT1_2));
    __m256 a = _mm256_andnot_ps(sign_mask, z);
    __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(ERF_P), a, one));
    __m256 r = _mm256_set1_ps(ERF_A5);
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(ERF_A4));
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(ERF_A3));
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(ERF_A2));
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(ERF_A1));
    r = _mm256_mul_ps(r, t);
    __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)));
    __m256 erf_abs = _mm256_fnmadd_ps(r, e, one);
    __m256 erf = _mm256_or_ps(erf_abs, _mm256_and_ps(sign_mask, z));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(one, erf));
}

AVX2 static void gelu_avx2(const float *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, gelu256(_mm256_loadu_ps(x + i)));
    if (i < n) store_partial(y + i, gelu256(load_partial(x + i, n - i, 0)), n - i);
}

AVX2 static void geglu_avx2(const float *in, float *out, size_t rows, size_t width) {
    for (size_t r = 0; r < rows; r++) {
        const float *hidden = in + r * 2 * width, *gate = hidden + width;
        float *o = out + r * width;
        size_t j = 0;
        for (; j + 8 <= width; j += 8)
            _mm256_storeu_ps(o + j, _mm256_mul_ps(_mm256_loadu_ps(hidden + j), gelu256(_mm256_loadu_ps(gate + j))));
        if (j < width) {
            __m256 g = gelu256(load_partial(gate + j, width - j, 0));
            store_partial(o + j, _mm256_mul_ps(load_partial(hidden + j, width - j, 0), g), width - j);
        }
    }
}

AVX2 static void moments_avx2(const float *x, size_t n, double *sum, double *sum_squares) {
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, q0 = s0, q1 = s0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        s0 = _mm256_add_pd(s0, lo);
        s1 = _mm256_add_pd(s1, hi);
        q0 = _mm256_fmadd_pd(lo, lo, q0);
        q1 = _mm256_fmadd_pd(hi, hi, q1);
    }
    double s[4], q[4];
    _mm256_storeu_pd(s, _mm256_add_pd(s0, s1));
    _mm256_storeu_pd(q, _mm256_add_pd(q0, q1));
    double ts = s[0] + s[1] + s[2] + s[3], tq = q[0] + q[1] + q[2] + q[3];
    for (; i < n; i++) { double v = x[i]; ts += v; tq += v * v; }
    *sum = ts; *sum_squares = tq;
}

AVX2 static void affine_avx2(const float *x, float *y, size_t n, float scale, float shift, int silu) {
    __m256 a = _mm256_set1_ps(scale), b = _mm256_set1_ps(shift);
    size_t i = 0;
    if (silu) {
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, silu256(_mm256_fmadd_ps(_mm256_loadu_ps(x + i), a, b)));
        if (i < n) store_partial(y + i, silu256(_mm256_fmadd_ps(load_partial(x + i, n - i, 0), a, b)), n - i);
    } else {
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), a, b));
        for (; i < n; i++) y[i] = x[i] * scale + shift;
    }
}

AVX2 static void layernorm_rows_avx2(const float *x, float *y, size_t rows, size_t width,
                                     const float *gamma, const float *beta, float eps) {
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * width;
        float *out = y + r * width;
        double s, unused;
        moments_avx2(row, width, &s, &unused);
        float mean = (float)(s / (double)width);
        // Second pass on (x − mean): no cancellation in the variance.
        __m256 m = _mm256_set1_ps(mean);
        __m256d q0 = _mm256_setzero_pd(), q1 = q0;
        size_t i = 0;
        for (; i + 8 <= width; i += 8) {
            __m256 d = _mm256_sub_ps(_mm256_loadu_ps(row + i), m);
            __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(d)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(d, 1));
            q0 = _mm256_fmadd_pd(lo, lo, q0);
            q1 = _mm256_fmadd_pd(hi, hi, q1);
        }
        double q[4];
        _mm256_storeu_pd(q, _mm256_add_pd(q0, q1));
        double tq = q[0] + q[1] + q[2] + q[3];
        for (; i < width; i++) { double d = (double)row[i] - mean; tq += d * d; }
        float rstd = (float)(1.0 / sqrt(tq / (double)width + eps));
        __m256 rs = _mm256_set1_ps(rstd);
        for (i = 0; i + 8 <= width; i += 8) {
            __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(row + i), m), rs);
            if (gamma) v = _mm256_mul_ps(v, _mm256_loadu_ps(gamma + i));
            if (beta) v = _mm256_add_ps(v, _mm256_loadu_ps(beta + i));
            _mm256_storeu_ps(out + i, v);
        }
        for (; i < width; i++) {
            float v = (row[i] - mean) * rstd;
            out[i] = v * (gamma ? gamma[i] : 1.0f) + (beta ? beta[i] : 0.0f);
        }
    }
}

AVX2 static void add_inplace_avx2(float *y, const float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
    for (; i < n; i++) y[i] += x[i];
}

AVX2 static void pack_keys_avx2(const float *k, size_t ks, size_t m, size_t d, float *kt) {
    pack_keys_portable(k, ks, m, d, kt); // memory-bound; the plain loops do
}


/// Two rows of P·V for NV vectors (8·NV output columns): o_r = (Σ_j p_r[j]·v[j]) · inv_r.
#define PV_KERNEL(NV)                                                                               \
AVX2 static void pv2_##NV(const float *p0, const float *p1, size_t n, const float *v, size_t vs,     \
                          float *o0, float *o1, float inv0, float inv1) {                            \
    __m256 a0[NV], a1[NV];                                                                          \
    for (int c = 0; c < NV; c++) { a0[c] = _mm256_setzero_ps(); a1[c] = _mm256_setzero_ps(); }      \
    for (size_t j = 0; j < n; j++) {                                                                \
        const float *vr = v + j * vs;                                                               \
        __m256 b0 = _mm256_broadcast_ss(p0 + j), b1 = _mm256_broadcast_ss(p1 + j);                  \
        for (int c = 0; c < NV; c++) {                                                              \
            __m256 x = _mm256_loadu_ps(vr + 8 * c);                                                 \
            a0[c] = _mm256_fmadd_ps(b0, x, a0[c]);                                                  \
            a1[c] = _mm256_fmadd_ps(b1, x, a1[c]);                                                  \
        }                                                                                           \
    }                                                                                               \
    __m256 s0 = _mm256_set1_ps(inv0), s1 = _mm256_set1_ps(inv1);                                    \
    for (int c = 0; c < NV; c++) {                                                                  \
        _mm256_storeu_ps(o0 + 8 * c, _mm256_mul_ps(a0[c], s0));                                     \
        _mm256_storeu_ps(o1 + 8 * c, _mm256_mul_ps(a1[c], s1));                                     \
    }                                                                                               \
}
PV_KERNEL(1)
PV_KERNEL(2)
PV_KERNEL(3)
PV_KERNEL(4)
PV_KERNEL(5)

AVX2 static void attention_rows_avx2(const float *q, size_t qs, size_t rows, size_t d,
                                     const float *kt, size_t m,
                                     const float *v, size_t vs, size_t dv,
                                     float *out, size_t os, float scale, long causal_offset, float *scratch) {
    const __m256 sc = _mm256_set1_ps(scale);
    const size_t ldkt = (m + 15) & ~(size_t)15; // score row stride
    for (size_t r0 = 0; r0 < rows; r0 += 6) {
        size_t R = rows - r0 < 6 ? rows - r0 : 6;
        const float *qr[6];
        float *srow[6];
        size_t limit[6], jmax = 0;
        for (size_t r = 0; r < 6; r++) {
            // Rows past R repeat row 0: computed, never used (keeps the kernel at 6 rows).
            qr[r] = q + (r0 + (r < R ? r : 0)) * qs;
            srow[r] = scratch + r * ldkt;
            size_t lim = m;
            if (causal_offset >= 0 && (size_t)causal_offset + r0 + r + 1 < m) lim = (size_t)causal_offset + r0 + r + 1;
            limit[r] = lim;
            if (r < R && lim > jmax) jmax = lim;
        }
        size_t jend = (jmax + 15) & ~(size_t)15; // ≤ ldkt: padded keys are zero
        // Scores: 6 rows × one 16-key panel per step, d-long dot products in 12 accumulators.
        for (size_t j0 = 0; j0 < jend; j0 += 16) {
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
            __m256 a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
            const float *kp = kt + (j0 / 16) * d * 16;
            for (size_t t = 0; t < d; t++) {
                __m256 k0 = _mm256_loadu_ps(kp + t * 16), k1 = _mm256_loadu_ps(kp + t * 16 + 8);
                __m256 b;
                b = _mm256_broadcast_ss(qr[0] + t); a00 = _mm256_fmadd_ps(b, k0, a00); a01 = _mm256_fmadd_ps(b, k1, a01);
                b = _mm256_broadcast_ss(qr[1] + t); a10 = _mm256_fmadd_ps(b, k0, a10); a11 = _mm256_fmadd_ps(b, k1, a11);
                b = _mm256_broadcast_ss(qr[2] + t); a20 = _mm256_fmadd_ps(b, k0, a20); a21 = _mm256_fmadd_ps(b, k1, a21);
                b = _mm256_broadcast_ss(qr[3] + t); a30 = _mm256_fmadd_ps(b, k0, a30); a31 = _mm256_fmadd_ps(b, k1, a31);
                b = _mm256_broadcast_ss(qr[4] + t); a40 = _mm256_fmadd_ps(b, k0, a40); a41 = _mm256_fmadd_ps(b, k1, a41);
                b = _mm256_broadcast_ss(qr[5] + t); a50 = _mm256_fmadd_ps(b, k0, a50); a51 = _mm256_fmadd_ps(b, k1, a51);
            }
            _mm256_storeu_ps(srow[0] + j0, _mm256_mul_ps(a00, sc)); _mm256_storeu_ps(srow[0] + j0 + 8, _mm256_mul_ps(a01, sc));
            _mm256_storeu_ps(srow[1] + j0, _mm256_mul_ps(a10, sc)); _mm256_storeu_ps(srow[1] + j0 + 8, _mm256_mul_ps(a11, sc));
            _mm256_storeu_ps(srow[2] + j0, _mm256_mul_ps(a20, sc)); _mm256_storeu_ps(srow[2] + j0 + 8, _mm256_mul_ps(a21, sc));
            _mm256_storeu_ps(srow[3] + j0, _mm256_mul_ps(a30, sc)); _mm256_storeu_ps(srow[3] + j0 + 8, _mm256_mul_ps(a31, sc));
            _mm256_storeu_ps(srow[4] + j0, _mm256_mul_ps(a40, sc)); _mm256_storeu_ps(srow[4] + j0 + 8, _mm256_mul_ps(a41, sc));
            _mm256_storeu_ps(srow[5] + j0, _mm256_mul_ps(a50, sc)); _mm256_storeu_ps(srow[5] + j0 + 8, _mm256_mul_ps(a51, sc));
        }
        float inv[6] = {0, 0, 0, 0, 0, 0};
        for (size_t r = 0; r < R; r++) inv[r] = softmax_row_unnormalised(srow[r], limit[r], jend);
        // P·V two rows at a time; a lone last row pairs with itself into a throwaway output.
        float spare[40];
        for (size_t r = 0; r < R; r += 2) {
            int pair = r + 1 < R;
            const float *p0 = srow[r], *p1 = pair ? srow[r + 1] : srow[r];
            size_t n = pair && limit[r + 1] > limit[r] ? limit[r + 1] : limit[r];
            float *o0 = out + (r0 + r) * os, *o1 = pair ? out + (r0 + r + 1) * os : spare;
            float i0 = inv[r], i1 = pair ? inv[r + 1] : inv[r];
            size_t c0 = 0;
            for (; c0 + 40 <= dv; c0 += 40) pv2_5(p0, p1, n, v + c0, vs, o0 + c0, pair ? o1 + c0 : spare, i0, i1);
            size_t nv = (dv - c0) / 8;
            switch (nv) {
            case 4: pv2_4(p0, p1, n, v + c0, vs, o0 + c0, pair ? o1 + c0 : spare, i0, i1); break;
            case 3: pv2_3(p0, p1, n, v + c0, vs, o0 + c0, pair ? o1 + c0 : spare, i0, i1); break;
            case 2: pv2_2(p0, p1, n, v + c0, vs, o0 + c0, pair ? o1 + c0 : spare, i0, i1); break;
            case 1: pv2_1(p0, p1, n, v + c0, vs, o0 + c0, pair ? o1 + c0 : spare, i0, i1); break;
            default: break;
            }
            // Columns past the last full vector, one by one.
            for (size_t c = c0 + 8 * nv; c < dv; c++) {
                float x0 = 0, x1 = 0;
                for (size_t j = 0; j < n; j++) { x0 += p0[j] * v[j * vs + c]; x1 += p1[j] * v[j * vs + c]; }
                o0[c] = x0 * i0;
                if (pair) o1[c] = x1 * i1;
            }
        }
    }
}
#endif

// MARK: - Dispatch

static inline int use_avx2(void) {
#ifdef AH_NN_X86
    return ah_dispatch_current() >= AH_DISPATCH_AVX2_F16C; // that level implies AVX2 + FMA
#else
    return 0;
#endif
}

#ifdef AH_NN_X86
#define DISPATCH(name, ...) do { if (use_avx2()) name##_avx2(__VA_ARGS__); else name##_portable(__VA_ARGS__); } while (0)
#else
#define DISPATCH(name, ...) name##_portable(__VA_ARGS__)
#endif

void ah_nn_softmax_rows(float *x, size_t rows, size_t length, size_t ld) { DISPATCH(softmax_rows, x, rows, length, ld); }
void ah_nn_silu(const float *x, float *y, size_t n) { DISPATCH(silu, x, y, n); }
void ah_nn_gelu(const float *x, float *y, size_t n) { DISPATCH(gelu, x, y, n); }
void ah_nn_geglu(const float *in, float *out, size_t rows, size_t width) { DISPATCH(geglu, in, out, rows, width); }
void ah_nn_moments(const float *x, size_t n, double *sum, double *sum_squares) { DISPATCH(moments, x, n, sum, sum_squares); }
void ah_nn_affine(const float *x, float *y, size_t n, float scale, float shift, int silu) {
    DISPATCH(affine, x, y, n, scale, shift, silu);
}
void ah_nn_layernorm_rows(const float *x, float *y, size_t rows, size_t width,
                          const float *gamma, const float *beta, float eps) {
    DISPATCH(layernorm_rows, x, y, rows, width, gamma, beta, eps);
}
void ah_nn_add_inplace(float *y, const float *x, size_t n) { DISPATCH(add_inplace, y, x, n); }
void ah_nn_pack_keys(const float *k, size_t ks, size_t m, size_t d, float *kt) {
    DISPATCH(pack_keys, k, ks, m, d, kt);
}
void ah_nn_attention_rows(const float *q, size_t qs, size_t rows, size_t d,
                          const float *kt, size_t m,
                          const float *v, size_t vs, size_t dv,
                          float *out, size_t os, float scale, long causal_offset, float *scratch) {
    DISPATCH(attention_rows, q, qs, rows, d, kt, m, v, vs, dv, out, os, scale, causal_offset, scratch);
}
