// Dtype conversions with runtime dispatch.
//
// Each conversion has a portable C version (the reference: bit-exact rules written out) and
// vector versions compiled for AVX2+F16C and AVX-512 with `target` attributes, so the file
// builds for baseline x86-64 and the vector code only runs after cpu.c has seen the features.
#include "CKernels.h"
#include <math.h>
#include <pthread.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define AH_X86 1
#endif

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// MARK: - Portable reference versions

static inline float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
    if (exp == 0x1F) {
        if (mant == 0) return bits_f32(sign | 0x7F800000); // ±inf
        // NaN: payload kept, quiet bit set, as F16C's vcvtph2ps does (so every dispatch level
        // gives the same bits) and as PyTorch and Swift's Float(Float16) do.
        return bits_f32(sign | 0x7FC00000 | (mant << 13));
    }
    if (exp == 0) {
        if (mant == 0) return bits_f32(sign);
        // Subnormal: value = mant * 2^-24, exact in f32.
        float v = (float)mant * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

static inline uint16_t float_to_half(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7FFFFFFF;
    if (ax > 0x7F800000) return sign | 0x7E00 | (uint16_t)((ax >> 13) & 0x3FF); // NaN, quieted (as F16C)
    if (ax >= 0x477FF000) return sign | 0x7C00; // rounds to >= 65520: overflow to inf
    if (ax < 0x38800000) {
        // Result is subnormal or zero: scale into the subnormal grid with one RNE rounding.
        // 0.5f magic: adding 2^-1 * 2^... is avoided; use integer rounding instead.
        if (ax < 0x33000000) return sign; // < 2^-25: rounds to zero (2^-25 ties to even 0)
        uint32_t e = ax >> 23, m = (ax & 0x7FFFFF) | 0x800000;
        int shift = 126 - (int)e; // bits to drop so that the result unit is 2^-24
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return sign | (uint16_t)q;
    }
    uint32_t r = ax + 0xFFF + ((ax >> 13) & 1); // round to nearest even on the 13 dropped bits
    return sign | (uint16_t)((r - 0x38000000) >> 13);
}

static inline uint16_t float_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7FFFFFFF) > 0x7F800000) return 0x7FC0;
    return (uint16_t)((x + 0x7FFF + ((x >> 16) & 1)) >> 16);
}

static void f16_to_f32_portable(const uint16_t *s, float *d, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = half_to_float(s[i]);
}
static void bf16_to_f32_portable(const uint16_t *s, float *d, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = bits_f32((uint32_t)s[i] << 16);
}
static void f32_to_f16_portable(const float *s, uint16_t *d, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = float_to_half(s[i]);
}
static void f32_to_bf16_portable(const float *s, uint16_t *d, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = float_to_bf16(s[i]);
}

#ifdef AH_X86
// MARK: - Streaming stores for large outputs
//
// An output of AH_STREAM_MIN_BYTES or more is far larger than the private caches, so its
// lines would be read from memory only to be overwritten (read-for-ownership) and evicted
// again. Non-temporal stores skip that read: measured on a 2-core Zen 3 guest, F16 -> F32 on
// 64 Mi elements into a reused buffer went from ~1.5 to ~1.8-2.5 G elements/s, and into a
// fresh (huge-page) buffer it was no slower. Below the threshold an output may still be in
// cache for its next use, so ordinary stores are kept.

/// Leading elements to convert one at a time so that the rest of `d` starts 32-byte
/// aligned, as streaming stores require; SIZE_MAX when `d` is not to be streamed (a small
/// output, or an address that is not a multiple of the element size, which no caller makes).
static inline size_t stream_head(const void *d, size_t element_size, size_t n) {
    if (n * element_size < AH_STREAM_MIN_BYTES || (uintptr_t)d % element_size) return SIZE_MAX;
    size_t misalignment = (uintptr_t)d % 32;
    return misalignment ? (32 - misalignment) / element_size : 0; // < 16 <= n
}

// MARK: - AVX2 + F16C

__attribute__((target("avx2,f16c,fma")))
static void f16_to_f32_avx2(const uint16_t *s, float *d, size_t n) {
    size_t i = 0, head = stream_head(d, sizeof *d, n);
    if (head != SIZE_MAX) {
        for (; i < head; i++) d[i] = half_to_float(s[i]);
        for (; i + 16 <= n; i += 16) {
            _mm256_stream_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
            _mm256_stream_ps(d + i + 8, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i + 8))));
        }
        _mm_sfence(); // streaming stores are weakly ordered: make them visible before returning
    }
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 8));
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(a));
        _mm256_storeu_ps(d + i + 8, _mm256_cvtph_ps(b));
    }
    for (; i < n; i++) d[i] = half_to_float(s[i]);
}

__attribute__((target("avx2,f16c,fma")))
static void f32_to_f16_avx2(const float *s, uint16_t *d, size_t n) {
    size_t i = 0, head = stream_head(d, sizeof *d, n);
    if (head != SIZE_MAX) {
        for (; i < head; i++) d[i] = float_to_half(s[i]);
        for (; i + 8 <= n; i += 8) // d + i is 16-byte aligned: head made it 32, steps are 16
            _mm_stream_si128((__m128i *)(d + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
        _mm_sfence();
    }
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) d[i] = float_to_half(s[i]);
}

__attribute__((target("avx2,f16c,fma")))
static void bf16_to_f32_avx2(const uint16_t *s, float *d, size_t n) {
    size_t i = 0, head = stream_head(d, sizeof *d, n);
    if (head != SIZE_MAX) {
        for (; i < head; i++) d[i] = bits_f32((uint32_t)s[i] << 16);
        for (; i + 16 <= n; i += 16) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(s + i));
            __m256i lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(v));
            __m256i hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1));
            _mm256_stream_si256((__m256i *)(d + i), _mm256_slli_epi32(lo, 16));
            _mm256_stream_si256((__m256i *)(d + i + 8), _mm256_slli_epi32(hi, 16));
        }
        _mm_sfence();
    }
    for (; i + 16 <= n; i += 16) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(s + i));
        __m256i lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(v));
        __m256i hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1));
        _mm256_storeu_si256((__m256i *)(d + i), _mm256_slli_epi32(lo, 16));
        _mm256_storeu_si256((__m256i *)(d + i + 8), _mm256_slli_epi32(hi, 16));
    }
    for (; i < n; i++) d[i] = bits_f32((uint32_t)s[i] << 16);
}

/// 16 floats at `s` rounded to BF16 (nearest even; NaN -> 0x7FC0), in order.
__attribute__((target("avx2,f16c,fma")))
static inline __m256i f32x16_to_bf16_avx2(const float *s) {
    const __m256i bias = _mm256_set1_epi32(0x7FFF), one = _mm256_set1_epi32(1);
    const __m256i qnan = _mm256_set1_epi32(0x7FC0);
    __m256i r[2];
    for (int h = 0; h < 2; h++) {
        __m256 f = _mm256_loadu_ps(s + 8 * h);
        __m256i x = _mm256_castps_si256(f);
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), one);
        __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, bias), lsb), 16);
        __m256 isnan = _mm256_cmp_ps(f, f, _CMP_UNORD_Q);
        r[h] = _mm256_blendv_epi8(rounded, qnan, _mm256_castps_si256(isnan));
    }
    // packus works within 128-bit lanes; permute restores element order.
    __m256i packed = _mm256_packus_epi32(r[0], r[1]);
    return _mm256_permute4x64_epi64(packed, 0xD8);
}

__attribute__((target("avx2,f16c,fma")))
static void f32_to_bf16_avx2(const float *s, uint16_t *d, size_t n) {
    size_t i = 0, head = stream_head(d, sizeof *d, n);
    if (head != SIZE_MAX) {
        for (; i < head; i++) d[i] = float_to_bf16(s[i]);
        for (; i + 16 <= n; i += 16) _mm256_stream_si256((__m256i *)(d + i), f32x16_to_bf16_avx2(s + i));
        _mm_sfence();
    }
    for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i *)(d + i), f32x16_to_bf16_avx2(s + i));
    for (; i < n; i++) d[i] = float_to_bf16(s[i]);
}

// MARK: - AVX-512
//
// Outputs of AH_STREAM_MIN_BYTES or more go to the AVX2 kernels: at that size the work is
// bound by memory traffic, not vector width, and the streaming path is then written (and
// tested) once. Every CPU at the AVX-512 level also has AVX2 and F16C.

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c")))
static void f16_to_f32_avx512(const uint16_t *s, float *d, size_t n) {
    if (n * sizeof *d >= AH_STREAM_MIN_BYTES) { f16_to_f32_avx2(s, d, n); return; }
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm512_storeu_ps(d + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i))));
        _mm512_storeu_ps(d + i + 16,
                         _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i + 16))));
    }
    for (; i < n; i++) d[i] = half_to_float(s[i]);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c")))
static void f32_to_f16_avx512(const float *s, uint16_t *d, size_t n) {
    if (n * sizeof *d >= AH_STREAM_MIN_BYTES) { f32_to_f16_avx2(s, d, n); return; }
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(d + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) d[i] = float_to_half(s[i]);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c")))
static void bf16_to_f32_avx512(const uint16_t *s, float *d, size_t n) {
    if (n * sizeof *d >= AH_STREAM_MIN_BYTES) { bf16_to_f32_avx2(s, d, n); return; }
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i x = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s + i)));
        _mm512_storeu_si512((void *)(d + i), _mm512_slli_epi32(x, 16));
    }
    for (; i < n; i++) d[i] = bits_f32((uint32_t)s[i] << 16);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c")))
static void f32_to_bf16_avx512(const float *s, uint16_t *d, size_t n) {
    if (n * sizeof *d >= AH_STREAM_MIN_BYTES) { f32_to_bf16_avx2(s, d, n); return; }
    size_t i = 0;
    const __m512i bias = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1);
    const __m512i qnan = _mm512_set1_epi32(0x7FC0);
    for (; i + 16 <= n; i += 16) {
        __m512 f = _mm512_loadu_ps(s + i);
        __m512i x = _mm512_castps_si512(f);
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), one);
        __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(x, bias), lsb), 16);
        __mmask16 nan = _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q);
        rounded = _mm512_mask_mov_epi32(rounded, nan, qnan);
        _mm256_storeu_si256((__m256i *)(d + i), _mm512_cvtepi32_epi16(rounded));
    }
    for (; i < n; i++) d[i] = float_to_bf16(s[i]);
}
#endif

// MARK: - Dispatch

#ifdef AH_X86
#define DISPATCH(name, ...)                                                 \
    switch (ah_dispatch_current()) {                                        \
    case AH_DISPATCH_AVX512: name##_avx512(__VA_ARGS__); return;            \
    case AH_DISPATCH_AVX2_F16C: name##_avx2(__VA_ARGS__); return;           \
    default: name##_portable(__VA_ARGS__); return;                          \
    }
#else
#define DISPATCH(name, ...) name##_portable(__VA_ARGS__)
#endif

void ah_f16_to_f32(const uint16_t *s, float *d, size_t n) { DISPATCH(f16_to_f32, s, d, n) }
void ah_bf16_to_f32(const uint16_t *s, float *d, size_t n) { DISPATCH(bf16_to_f32, s, d, n) }
void ah_f32_to_f16(const float *s, uint16_t *d, size_t n) { DISPATCH(f32_to_f16, s, d, n) }
void ah_f32_to_bf16(const float *s, uint16_t *d, size_t n) { DISPATCH(f32_to_bf16, s, d, n) }

// MARK: - F8 (lookup tables: 256 exact values each)

static float g_e4m3[256], g_e5m2[256];
static pthread_once_t g_f8_once = PTHREAD_ONCE_INIT;

static void build_f8_tables(void) {
    for (int b = 0; b < 256; b++) {
        int sign = b >> 7;
        // E4M3FN: bias 7, 3 mantissa bits, no infinities, S.1111.111 is NaN. The NaN keeps
        // its sign and mantissa as the top payload bits (0x7F -> 0x7FF00000), as PyTorch does.
        int e = (b >> 3) & 0xF, m = b & 7;
        float v;
        if (e == 0xF && m == 7) v = bits_f32(0x7F800000u | ((uint32_t)m << 20));
        else if (e == 0) v = ldexpf((float)m, -9);            // subnormal: m * 2^-6 / 8
        else v = ldexpf(1.0f + (float)m / 8.0f, e - 7);
        g_e4m3[b] = bits_f32(f32_bits(v) | ((uint32_t)sign << 31));
        // E5M2 is the top byte of an F16 (bias 15, 2 mantissa bits, IEEE specials): widening
        // it as that F16 is exact and gives NaNs the same quieted payload as F16 (and PyTorch).
        g_e5m2[b] = half_to_float((uint16_t)(b << 8));
    }
}

void ah_f8e4m3_to_f32(const uint8_t *s, float *d, size_t n) {
    pthread_once(&g_f8_once, build_f8_tables);
    for (size_t i = 0; i < n; i++) d[i] = g_e4m3[s[i]];
}
void ah_f8e5m2_to_f32(const uint8_t *s, float *d, size_t n) {
    pthread_once(&g_f8_once, build_f8_tables);
    for (size_t i = 0; i < n; i++) d[i] = g_e5m2[s[i]];
}
void ah_f64_to_f32(const double *s, float *d, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = (float)s[i];
}
void ah_f32_to_f64(const float *s, double *d, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = (double)s[i];
}
