// Loads OpenBLAS and LAPACKE at run time, after choosing OpenBLAS's kernel set.
//
// Why not link them: OpenBLAS built with DYNAMIC_ARCH (Debian's) picks its kernels in a
// library constructor, from its own CPU table, when the library is loaded. Debian's 0.3.21
// does not know newer CPUs and falls back to "Prescott" kernels (SSE3, ~4.5x slower GEMM
// on an AVX-512 Xeon). The only switch is the OPENBLAS_CORETYPE environment variable, read
// by that constructor; a linked library runs its constructor before `main`, so a setenv in
// `main` is too late. We therefore dlopen the library ourselves, after setting the variable
// from our own cpuid check (cpu.c), unless the user already set it.
#include "CKernels.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// CBLAS enums, values fixed by the CBLAS standard (cblas.h).
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
// LAPACKE layout constant (lapacke.h).
enum { LAPACK_ROW_MAJOR = 101 };
typedef int lapack_int; // Debian's LAPACKE is built with 32-bit integers (LP64).

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                         const float *, int, float, float *, int);
typedef void (*dgemm_fn)(int, int, int, int, int, int, double, const double *, int,
                         const double *, int, double, double *, int);
typedef char *(*corename_fn)(void);
typedef int (*get_threads_fn)(void);
typedef void (*set_threads_fn)(int);
typedef lapack_int (*sgesdd_fn)(int, char, lapack_int, lapack_int, float *, lapack_int, float *,
                                float *, lapack_int, float *, lapack_int);
typedef lapack_int (*dgesdd_fn)(int, char, lapack_int, lapack_int, double *, lapack_int,
                                double *, double *, lapack_int, double *, lapack_int);
typedef lapack_int (*sgeqrf_fn)(int, lapack_int, lapack_int, float *, lapack_int, float *);
typedef lapack_int (*sorgqr_fn)(int, lapack_int, lapack_int, lapack_int, float *, lapack_int,
                                const float *);
typedef lapack_int (*dgeqrf_fn)(int, lapack_int, lapack_int, double *, lapack_int, double *);
typedef lapack_int (*dorgqr_fn)(int, lapack_int, lapack_int, lapack_int, double *, lapack_int,
                                const double *);
typedef lapack_int (*sgesv_fn)(int, lapack_int, lapack_int, float *, lapack_int, lapack_int *,
                               float *, lapack_int);
typedef lapack_int (*dgesv_fn)(int, lapack_int, lapack_int, double *, lapack_int, lapack_int *,
                               double *, lapack_int);
typedef lapack_int (*sgetrf_fn)(int, lapack_int, lapack_int, float *, lapack_int, lapack_int *);
typedef lapack_int (*sgetri_fn)(int, lapack_int, float *, lapack_int, const lapack_int *);
typedef lapack_int (*dgetrf_fn)(int, lapack_int, lapack_int, double *, lapack_int, lapack_int *);
typedef lapack_int (*dgetri_fn)(int, lapack_int, double *, lapack_int, const lapack_int *);

static struct {
    sgemm_fn sgemm;
    dgemm_fn dgemm;
    corename_fn corename;
    get_threads_fn get_threads;
    set_threads_fn set_threads;
    sgesdd_fn sgesdd;
    dgesdd_fn dgesdd;
    sgeqrf_fn sgeqrf;
    sorgqr_fn sorgqr;
    dgeqrf_fn dgeqrf;
    dorgqr_fn dorgqr;
    sgesv_fn sgesv;
    dgesv_fn dgesv;
    sgetrf_fn sgetrf;
    sgetri_fn sgetri;
    dgetrf_fn dgetrf;
    dgetri_fn dgetri;
} g_fn;

static ah_blas_status g_status;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

const char *ah_blas_choose_coretype(const ah_cpu_features *f) {
    // SkylakeX kernels use AVX-512 F/CD/BW/DQ/VL; every CPU with those runs them correctly
    // (Skylake-SP, Cascade Lake, Ice Lake, Sapphire Rapids, AMD Zen 4/5).
    if (f->avx512f && f->avx512cd && f->avx512bw && f->avx512dq && f->avx512vl) return "SkylakeX";
    // Haswell kernels need AVX2 + FMA; AMD parts get the same kernels with Zen blocking.
    if (f->avx2 && f->fma) return f->vendor_amd ? "Zen" : "Haswell";
    // Older or unknown: leave the choice to OpenBLAS, which is conservative there.
    return NULL;
}

static int fail(const char *what, const char *detail) {
    snprintf(g_status.error, sizeof g_status.error, "%s%s%s", what, detail ? ": " : "",
             detail ? detail : "");
    return 0;
}

#define RESOLVE(handle, field, symbol)                                    \
    do {                                                                  \
        *(void **)(&g_fn.field) = dlsym(handle, symbol);                  \
        if (!g_fn.field) return fail("missing symbol " symbol, dlerror()); \
    } while (0)

static int load(void) {
    const char *preset = getenv("OPENBLAS_CORETYPE");
    if (preset && preset[0]) {
        g_status.coretype_from_env = 1;
        snprintf(g_status.chosen_coretype, sizeof g_status.chosen_coretype, "%s", preset);
    } else {
        const char *choice = ah_blas_choose_coretype(ah_cpu_detect());
        if (choice) {
            // setenv is not thread-safe against concurrent getenv; it runs once, under
            // pthread_once, before any thread of ours reads the environment for BLAS.
            setenv("OPENBLAS_CORETYPE", choice, 1);
            snprintf(g_status.chosen_coretype, sizeof g_status.chosen_coretype, "%s", choice);
        }
    }
    // OpenBLAS's idle worker threads spin (sched_yield in a loop) for 2^28 cycles (~0.1 s)
    // after every threaded call before they sleep. Between GEMMs the runtime runs its own
    // threads (norms, softmax, im2col, attention with per-thread GEMMs), and the spinning
    // worker takes a core from them: measured on a 2-core VM, one SD UNet call took 1.5-1.7×
    // as long. 2^4 cycles makes workers sleep at once; waking them costs a few µs per GEMM.
    // The user's own setting wins (overwrite = 0); same once-only rule as above for setenv.
    setenv("OPENBLAS_THREAD_TIMEOUT", "4", 0);
    static const char *blas_names[] = {"libopenblas.so.0", "libopenblas.so",
                                       "libopenblas.dylib", NULL};
    void *blas = NULL;
    for (int i = 0; blas_names[i] && !blas; i++) {
        blas = dlopen(blas_names[i], RTLD_NOW | RTLD_GLOBAL);
        if (blas) snprintf(g_status.library_path, sizeof g_status.library_path, "%s", blas_names[i]);
    }
    if (!blas) return fail("cannot open OpenBLAS (install libopenblas-dev)", dlerror());
    RESOLVE(blas, sgemm, "cblas_sgemm");
    RESOLVE(blas, dgemm, "cblas_dgemm");
    RESOLVE(blas, corename, "openblas_get_corename");
    RESOLVE(blas, get_threads, "openblas_get_num_threads");
    RESOLVE(blas, set_threads, "openblas_set_num_threads");

    static const char *lapacke_names[] = {"liblapacke.so.3", "liblapacke.so", "liblapacke.dylib",
                                          NULL};
    void *lapacke = NULL;
    for (int i = 0; lapacke_names[i] && !lapacke; i++)
        lapacke = dlopen(lapacke_names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lapacke) return fail("cannot open LAPACKE (install liblapacke-dev)", dlerror());
    RESOLVE(lapacke, sgesdd, "LAPACKE_sgesdd");
    RESOLVE(lapacke, dgesdd, "LAPACKE_dgesdd");
    RESOLVE(lapacke, sgeqrf, "LAPACKE_sgeqrf");
    RESOLVE(lapacke, sorgqr, "LAPACKE_sorgqr");
    RESOLVE(lapacke, dgeqrf, "LAPACKE_dgeqrf");
    RESOLVE(lapacke, dorgqr, "LAPACKE_dorgqr");
    RESOLVE(lapacke, sgesv, "LAPACKE_sgesv");
    RESOLVE(lapacke, dgesv, "LAPACKE_dgesv");
    RESOLVE(lapacke, sgetrf, "LAPACKE_sgetrf");
    RESOLVE(lapacke, sgetri, "LAPACKE_sgetri");
    RESOLVE(lapacke, dgetrf, "LAPACKE_dgetrf");
    RESOLVE(lapacke, dgetri, "LAPACKE_dgetri");
    return 1;
}

static void load_once(void) { g_status.loaded = load(); }

const ah_blas_status *ah_blas_load(void) {
    pthread_once(&g_once, load_once);
    return &g_status;
}

const char *ah_blas_corename(void) {
    return ah_blas_load()->loaded ? g_fn.corename() : "";
}

int ah_blas_num_threads(void) { return ah_blas_load()->loaded ? g_fn.get_threads() : 0; }

void ah_blas_set_num_threads(int n) {
    if (ah_blas_load()->loaded) g_fn.set_threads(n);
}

// The wrappers below assume ah_blas_load()->loaded was checked by the caller (the Swift
// side does so once, when the tensor core first needs BLAS); a null pointer call would crash.
void ah_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc) {
    g_fn.sgemm(CBLAS_ROW_MAJOR, ta ? CBLAS_TRANS : CBLAS_NO_TRANS, tb ? CBLAS_TRANS : CBLAS_NO_TRANS,
               m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void ah_dgemm(int ta, int tb, int m, int n, int k, double alpha, const double *a, int lda,
              const double *b, int ldb, double beta, double *c, int ldc) {
    g_fn.dgemm(CBLAS_ROW_MAJOR, ta ? CBLAS_TRANS : CBLAS_NO_TRANS, tb ? CBLAS_TRANS : CBLAS_NO_TRANS,
               m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

int ah_sgesdd(char jobz, int m, int n, float *a, int lda, float *s, float *u, int ldu, float *vt,
              int ldvt) {
    return g_fn.sgesdd(LAPACK_ROW_MAJOR, jobz, m, n, a, lda, s, u, ldu, vt, ldvt);
}
int ah_dgesdd(char jobz, int m, int n, double *a, int lda, double *s, double *u, int ldu,
              double *vt, int ldvt) {
    return g_fn.dgesdd(LAPACK_ROW_MAJOR, jobz, m, n, a, lda, s, u, ldu, vt, ldvt);
}
int ah_sgeqrf(int m, int n, float *a, int lda, float *tau) {
    return g_fn.sgeqrf(LAPACK_ROW_MAJOR, m, n, a, lda, tau);
}
int ah_sorgqr(int m, int n, int k, float *a, int lda, const float *tau) {
    return g_fn.sorgqr(LAPACK_ROW_MAJOR, m, n, k, a, lda, tau);
}
int ah_dgeqrf(int m, int n, double *a, int lda, double *tau) {
    return g_fn.dgeqrf(LAPACK_ROW_MAJOR, m, n, a, lda, tau);
}
int ah_dorgqr(int m, int n, int k, double *a, int lda, const double *tau) {
    return g_fn.dorgqr(LAPACK_ROW_MAJOR, m, n, k, a, lda, tau);
}
int ah_sgesv(int n, int nrhs, float *a, int lda, int *ipiv, float *b, int ldb) {
    return g_fn.sgesv(LAPACK_ROW_MAJOR, n, nrhs, a, lda, ipiv, b, ldb);
}
int ah_dgesv(int n, int nrhs, double *a, int lda, int *ipiv, double *b, int ldb) {
    return g_fn.dgesv(LAPACK_ROW_MAJOR, n, nrhs, a, lda, ipiv, b, ldb);
}
int ah_sgetrf(int m, int n, float *a, int lda, int *ipiv) {
    return g_fn.sgetrf(LAPACK_ROW_MAJOR, m, n, a, lda, ipiv);
}
int ah_sgetri(int n, float *a, int lda, const int *ipiv) {
    return g_fn.sgetri(LAPACK_ROW_MAJOR, n, a, lda, ipiv);
}
int ah_dgetrf(int m, int n, double *a, int lda, int *ipiv) {
    return g_fn.dgetrf(LAPACK_ROW_MAJOR, m, n, a, lda, ipiv);
}
int ah_dgetri(int n, double *a, int lda, const int *ipiv) {
    return g_fn.dgetri(LAPACK_ROW_MAJOR, n, a, lda, ipiv);
}
