/* A correct plugin whose function table covers every ah_ffi_type, for the libffi tests. */
#define TOY_ID "ffi-probe"
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "adapterhost_plugin.h"

static int32_t calls = 0;
static char echo_buffer[256];

static double mix(int32_t a, int64_t b, float c, double d, const char *s) {
    calls++;
    return (double)a + (double)b * 10.0 + (double)c * 100.0 + d * 1000.0 + (double)strlen(s) * 10000.0;
}
static int32_t negate(int32_t x) { calls++; return -x; }
static int64_t big(void) { calls++; return INT64_C(1) << 40; }
static float halve(float x) { calls++; return x / 2; }
static const char *echo(const char *s) {
    calls++;
    snprintf(echo_buffer, sizeof echo_buffer, "echo:%s", s);
    return echo_buffer;
}
static const char *null_string(void) { calls++; return NULL; }
static void *identity(void *p) { calls++; return p; }
static void bump(void) { calls++; }
static int32_t call_count(void) { return calls; }
static double eight(int32_t a, int32_t b, int32_t c, int32_t d, double e, double f, double g, const char *h) {
    return a + b + c + d + e + f + g + (double)strlen(h);
}

static const ah_plugin_function probe_functions[] = {
    {"mix", "a + 10b + 100c + 1000d + 10000 strlen(s)", (void (*)(void))mix, AH_FFI_F64, 5,
     {AH_FFI_I32, AH_FFI_I64, AH_FFI_F32, AH_FFI_F64, AH_FFI_STRING}},
    {"negate", "-x", (void (*)(void))negate, AH_FFI_I32, 1, {AH_FFI_I32}},
    {"big", "2^40", (void (*)(void))big, AH_FFI_I64, 0, {0}},
    {"halve", "x/2", (void (*)(void))halve, AH_FFI_F32, 1, {AH_FFI_F32}},
    {"echo", "\"echo:\" + s", (void (*)(void))echo, AH_FFI_STRING, 1, {AH_FFI_STRING}},
    {"null_string", "breaks the rules: returns NULL", (void (*)(void))null_string, AH_FFI_STRING, 0, {0}},
    {"identity", "p", (void (*)(void))identity, AH_FFI_POINTER, 1, {AH_FFI_POINTER}},
    {"bump", "counts a call", (void (*)(void))bump, AH_FFI_VOID, 0, {0}},
    {"call_count", "calls so far", (void (*)(void))call_count, AH_FFI_I32, 0, {0}},
    {"eight", "sum of eight arguments", (void (*)(void))eight, AH_FFI_F64, 8,
     {AH_FFI_I32, AH_FFI_I32, AH_FFI_I32, AH_FFI_I32, AH_FFI_F64, AH_FFI_F64, AH_FFI_F64, AH_FFI_STRING}},
};
#define TOY_FUNCTIONS probe_functions
#define TOY_FUNCTION_COUNT (sizeof probe_functions / sizeof probe_functions[0])
#include "toy_plugin.h"
