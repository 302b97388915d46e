// CKernels: the C side of the tensor core.
//
// Three jobs, each in its own .c file:
//   cpu.c          CPU feature detection (cpuid + xgetbv) and the dispatch level in force.
//   convert.c      dtype widening/narrowing (F16, BF16, F8) with runtime dispatch:
//                  AVX-512, AVX2+F16C, or portable C.
//   blas_loader.c  chooses OpenBLAS's kernel set for this CPU *before* the library loads,
//                  then opens OpenBLAS and LAPACKE with dlopen and resolves the entry points.
//
// Nothing here knows about adapters or models.
#ifndef ADAPTERHOST_CKERNELS_H
#define ADAPTERHOST_CKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - CPU features

/// What the processor and the OS together allow (a feature counts only when the OS also
/// saves its register state: AVX needs XCR0 bits 1-2, AVX-512 bits 5-7).
typedef struct {
    int vendor_intel;
    int vendor_amd;
    int family;
    int model;
    int sse41;
    int avx;
    int avx2;
    int fma;
    int f16c;
    int avx512f;
    int avx512bw;
    int avx512vl;
    int avx512dq;
    int avx512cd;
    int avx512_bf16;
} ah_cpu_features;

/// Detects the features of the CPU this process runs on (cached after the first call).
const ah_cpu_features *ah_cpu_detect(void);

/// Kernel families the conversion routines can dispatch to, slowest first.
typedef enum {
    AH_DISPATCH_PORTABLE = 0,
    AH_DISPATCH_AVX2_F16C = 1,
    AH_DISPATCH_AVX512 = 2,
} ah_dispatch_level;

/// The best level this CPU supports.
ah_dispatch_level ah_dispatch_best(void);
/// The level in force (the best, unless lowered with `ah_dispatch_set`).
ah_dispatch_level ah_dispatch_current(void);
/// Lowers (or restores) the level in force; a level above the best is clamped to the best.
/// Returns the level now in force. Used by tests to run every path on one machine.
ah_dispatch_level ah_dispatch_set(ah_dispatch_level level);

// MARK: - Conversions (all: `n` elements, no aliasing between src and dst)

/// F16/BF16 <-> F32 outputs of at least this many bytes are written with non-temporal
/// (streaming) stores by the vector kernels, bypassing the caches (see convert.c).
#define AH_STREAM_MIN_BYTES 8388608

/// Exact. A NaN keeps its sign and payload and comes out quiet (as F16C's vcvtph2ps).
void ah_f16_to_f32(const uint16_t *src, float *dst, size_t n);
/// Exact: the bits shifted left by 16 (a NaN's bits are kept as they are, as in PyTorch).
void ah_bf16_to_f32(const uint16_t *src, float *dst, size_t n);
/// Round to nearest even; NaN stays NaN (quiet), overflow becomes ±inf.
void ah_f32_to_f16(const float *src, uint16_t *dst, size_t n);
/// Round to nearest even; NaN becomes 0x7FC0, as PyTorch's c10::BFloat16 does.
void ah_f32_to_bf16(const float *src, uint16_t *dst, size_t n);
/// F8 E4M3FN (no infinities; 0x7F/0xFF are NaN) and F8 E5M2 (IEEE-like), widened exactly.
void ah_f8e4m3_to_f32(const uint8_t *src, float *dst, size_t n);
void ah_f8e5m2_to_f32(const uint8_t *src, float *dst, size_t n);
void ah_f64_to_f32(const double *src, float *dst, size_t n);
void ah_f32_to_f64(const float *src, double *dst, size_t n);

// MARK: - BLAS / LAPACK (loaded at run time)

/// Outcome of loading OpenBLAS and LAPACKE.
typedef struct {
    int loaded;                 ///< 1 when every entry point resolved
    char error[512];            ///< why loading failed, when it did
    char chosen_coretype[32];   ///< what we set OPENBLAS_CORETYPE to ("" when left to OpenBLAS)
    int coretype_from_env;      ///< 1 when the user had set OPENBLAS_CORETYPE already
    char library_path[256];     ///< the OpenBLAS library opened
} ah_blas_status;

/// The OpenBLAS kernel set we pick for a feature set, or NULL to let OpenBLAS decide.
/// Pure function; exposed so tests can check the choice for CPUs we do not have.
const char *ah_blas_choose_coretype(const ah_cpu_features *features);

/// Loads OpenBLAS and LAPACKE once (thread-safe) and returns the outcome.
const ah_blas_status *ah_blas_load(void);

/// OpenBLAS's own name for the kernel set it runs ("SkylakeX", "Haswell", "Zen", ...).
const char *ah_blas_corename(void);
int ah_blas_num_threads(void);
void ah_blas_set_num_threads(int n);

/// Row-major single-precision GEMM: C = alpha * op(A) * op(B) + beta * C.
/// trans_a / trans_b: 0 = as stored, 1 = transposed. Requires ah_blas_load()->loaded.
void ah_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
              const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
void ah_dgemm(int trans_a, int trans_b, int m, int n, int k, double alpha,
              const double *a, int lda, const double *b, int ldb, double beta, double *c, int ldc);

/// LAPACKE row-major drivers; each returns LAPACK's `info` (0 = success).
int ah_sgesdd(char jobz, int m, int n, float *a, int lda, float *s, float *u, int ldu,
              float *vt, int ldvt);
int ah_dgesdd(char jobz, int m, int n, double *a, int lda, double *s, double *u, int ldu,
              double *vt, int ldvt);
int ah_sgeqrf(int m, int n, float *a, int lda, float *tau);
int ah_sorgqr(int m, int n, int k, float *a, int lda, const float *tau);
int ah_dgeqrf(int m, int n, double *a, int lda, double *tau);
int ah_dorgqr(int m, int n, int k, double *a, int lda, const double *tau);
int ah_sgesv(int n, int nrhs, float *a, int lda, int *ipiv, float *b, int ldb);
int ah_dgesv(int n, int nrhs, double *a, int lda, int *ipiv, double *b, int ldb);
int ah_sgetrf(int m, int n, float *a, int lda, int *ipiv);
int ah_sgetri(int n, float *a, int lda, const int *ipiv);
int ah_dgetrf(int m, int n, double *a, int lda, int *ipiv);
int ah_dgetri(int n, double *a, int lda, const int *ipiv);

#ifdef __cplusplus
}
#endif
// Neural-network kernels for the Stable Diffusion runtime (nn_kernels.c).
#include "ah_nn.h"

#endif
