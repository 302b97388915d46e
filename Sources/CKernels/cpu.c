// CPU feature detection and the conversion dispatch level.
#include "CKernels.h"
#include <cpuid.h>
#include <pthread.h>
#include <string.h>

static ah_cpu_features g_features;
static pthread_once_t g_features_once = PTHREAD_ONCE_INIT;
static ah_dispatch_level g_best = AH_DISPATCH_PORTABLE;
// Written by ah_dispatch_set (tests only) and read by every conversion; an int-sized store is
// atomic on x86-64, and a reader that sees the old value still runs a valid kernel.
static volatile int g_current = -1;

// XGETBV is only legal when CPUID.1:ECX.OSXSAVE is set; callers check that first.
static uint64_t read_xcr0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

static void detect(void) {
    ah_cpu_features f;
    memset(&f, 0, sizeof f);
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) { g_features = f; return; }
    unsigned int max_leaf = eax;
    // Vendor string is EBX, EDX, ECX.
    char vendor[13];
    memcpy(vendor, &ebx, 4); memcpy(vendor + 4, &edx, 4); memcpy(vendor + 8, &ecx, 4);
    vendor[12] = 0;
    f.vendor_intel = strcmp(vendor, "GenuineIntel") == 0;
    f.vendor_amd = strcmp(vendor, "AuthenticAMD") == 0;

    __get_cpuid(1, &eax, &ebx, &ecx, &edx);
    int base_family = (eax >> 8) & 0xF, ext_family = (eax >> 20) & 0xFF;
    int base_model = (eax >> 4) & 0xF, ext_model = (eax >> 16) & 0xF;
    f.family = base_family == 0xF ? base_family + ext_family : base_family;
    f.model = (base_family == 0x6 || base_family == 0xF) ? (ext_model << 4) + base_model : base_model;
    int osxsave = (ecx >> 27) & 1;
    int cpu_avx = (ecx >> 28) & 1;
    f.sse41 = (ecx >> 19) & 1;
    int cpu_fma = (ecx >> 12) & 1;
    int cpu_f16c = (ecx >> 29) & 1;

    uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    int os_ymm = (xcr0 & 0x6) == 0x6;          // SSE + AVX state
    int os_zmm = os_ymm && (xcr0 & 0xE0) == 0xE0; // opmask + ZMM_Hi256 + Hi16_ZMM

    f.avx = cpu_avx && os_ymm;
    f.fma = cpu_fma && f.avx;
    f.f16c = cpu_f16c && f.avx;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, eax, ebx, ecx, edx);
        f.avx2 = ((ebx >> 5) & 1) && f.avx;
        f.avx512f = ((ebx >> 16) & 1) && os_zmm;
        f.avx512dq = ((ebx >> 17) & 1) && os_zmm;
        f.avx512cd = ((ebx >> 28) & 1) && os_zmm;
        f.avx512bw = ((ebx >> 30) & 1) && os_zmm;
        f.avx512vl = ((ebx >> 31) & 1) && os_zmm;
        __cpuid_count(7, 1, eax, ebx, ecx, edx);
        f.avx512_bf16 = ((eax >> 5) & 1) && os_zmm;
    }
    g_features = f;
    if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.f16c) g_best = AH_DISPATCH_AVX512;
    else if (f.avx2 && f.f16c && f.fma) g_best = AH_DISPATCH_AVX2_F16C;
    else g_best = AH_DISPATCH_PORTABLE;
}

const ah_cpu_features *ah_cpu_detect(void) {
    pthread_once(&g_features_once, detect);
    return &g_features;
}

ah_dispatch_level ah_dispatch_best(void) {
    ah_cpu_detect();
    return g_best;
}

ah_dispatch_level ah_dispatch_current(void) {
    ah_cpu_detect();
    int c = g_current;
    return c < 0 ? g_best : (ah_dispatch_level)c;
}

ah_dispatch_level ah_dispatch_set(ah_dispatch_level level) {
    ah_cpu_detect();
    if ((int)level > (int)g_best) level = g_best;
    if ((int)level < 0) level = AH_DISPATCH_PORTABLE;
    g_current = (int)level;
    return level;
}
