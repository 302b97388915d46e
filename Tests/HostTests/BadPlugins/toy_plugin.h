/*
 * toy_plugin.h — a minimal, correct AdapterHost plugin that the bad-plugin test files include
 * after #defining the one thing they break. Compiled by the tests at run time
 * (Tests/HostTests/PluginTestSupport.swift), never by SwiftPM (excluded in Package.swift).
 *
 * Method "toy": keys `<module>.toy_scale` (one F32 value per module) and a shared `toy_offset`
 * (one value for the whole file). delta = strength * (scale + offset) everywhere, in the
 * weight's shape.
 *
 * Knobs (#define before including):
 *   TOY_ID "x"                 method id
 *   TOY_ABI n                  abi_version
 *   TOY_STRUCT_SIZE n          struct_size
 *   TOY_NO_ENTRY               do not export the entry symbol
 *   TOY_NULL_DESCRIPTOR        the entry returns NULL
 *   TOY_NULL_DELTA             the required `delta` pointer is NULL
 *   TOY_FUNCTIONS / TOY_FUNCTION_COUNT   a custom function table
 *   TOY_DELTA_SHAPE_EXTRA n    add n to the delta's first dimension
 *   TOY_DELTA_DTYPE d          the delta's dtype
 *   TOY_DELTA_TRANSPOSED       return the delta through non-contiguous strides
 *   TOY_DELTA_FAILS "msg"      delta returns AH_ERR_INVALID_INPUT with this message
 *   TOY_LOAD_FAILS "msg"       load returns AH_ERR_UNSUPPORTED with this message
 *   TOY_CLAIM_ANSWER n         claim_key answers n for module keys
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "adapterhost_plugin.h"

#ifndef TOY_ID
#define TOY_ID "toy"
#endif
#ifndef TOY_ABI
#define TOY_ABI AH_PLUGIN_ABI_VERSION
#endif
#ifndef TOY_STRUCT_SIZE
#define TOY_STRUCT_SIZE sizeof(ah_plugin_descriptor)
#endif
#ifndef TOY_DELTA_SHAPE_EXTRA
#define TOY_DELTA_SHAPE_EXTRA 0
#endif
#ifndef TOY_DELTA_DTYPE
#define TOY_DELTA_DTYPE AH_DTYPE_F32
#endif
#ifndef TOY_CLAIM_ANSWER
#define TOY_CLAIM_ANSWER 1
#endif

typedef struct {
    size_t count;
    float *scales;
    float offset;
    float *result;
} toy_adapter;

__attribute__((unused)) static int32_t toy_fail(ah_error *err, int32_t code, const char *message) {
    err->code = code;
    snprintf(err->message, sizeof err->message, "%s", message);
    return code;
}

static int32_t toy_claim_key(const char *key, char *out, size_t size) {
    const char *suffix = ".toy_scale";
    size_t n = strlen(key), m = strlen(suffix);
    if (strcmp(key, "toy_offset") == 0) { out[0] = 0; return 1; }
    if (n > m && strcmp(key + n - m, suffix) == 0 && n - m < size) {
        memcpy(out, key, n - m);
        out[n - m] = 0;
        return TOY_CLAIM_ANSWER;
    }
    return 0;
}

static void toy_free(void *handle) {
    toy_adapter *a = handle;
    if (!a) return;
    free(a->scales);
    free(a->result);
    free(a);
}

__attribute__((unused)) static int32_t read_scalar(const ah_host_api *host, const ah_source *src, const char *key, float *value, ah_error *err) {
    ah_tensor t;
    int32_t st = host->get_tensor_f32(src, key, &t, err);
    if (st != AH_OK) return st;
    *value = *(const float *)t.data;
    return AH_OK;
}

static int32_t toy_load(const ah_host_api *host, const ah_source *src, const char *const *modules, size_t count,
                        void **out, ah_error *err) {
#ifdef TOY_LOAD_FAILS
    (void)host; (void)src; (void)modules; (void)count; (void)out;
    return toy_fail(err, AH_ERR_UNSUPPORTED, TOY_LOAD_FAILS);
#else
    toy_adapter *a = calloc(1, sizeof *a);
    a->count = count;
    a->scales = calloc(count ? count : 1, sizeof(float));
    char key[1024];
    int32_t st = read_scalar(host, src, "toy_offset", &a->offset, err);
    for (size_t i = 0; st == AH_OK && i < count; i++) {
        snprintf(key, sizeof key, "%s.toy_scale", modules[i]);
        st = read_scalar(host, src, key, &a->scales[i], err);
    }
    if (st != AH_OK) { toy_free(a); return st; }
    *out = a;
    return AH_OK;
#endif
}

static int32_t toy_module_info(void *handle, size_t index, ah_module_info *out, ah_error *err) {
    (void)handle; (void)index; (void)err;
    out->module_type = "toy";
    out->rank = 0;
    out->alpha = NAN;
    return AH_OK;
}

__attribute__((unused)) static int32_t toy_delta(void *handle, size_t index, const ah_tensor *w, float strength, ah_tensor *out, ah_error *err) {
#ifdef TOY_DELTA_FAILS
    (void)handle; (void)index; (void)w; (void)strength; (void)out;
    return toy_fail(err, AH_ERR_INVALID_INPUT, TOY_DELTA_FAILS);
#else
    (void)err;
    toy_adapter *a = handle;
    int64_t count = 1;
    for (int d = 0; d < w->rank; d++) count *= w->shape[d];
    free(a->result);
    a->result = malloc((size_t)(count + 64) * sizeof(float));
    float v = strength * (a->scales[index] + a->offset);
    for (int64_t i = 0; i < count + 64; i++) a->result[i] = v;
    out->data = a->result;
    out->dtype = TOY_DELTA_DTYPE;
    out->rank = w->rank;
    for (int d = 0; d < w->rank; d++) { out->shape[d] = w->shape[d]; out->strides[d] = w->strides[d]; }
    out->shape[0] += TOY_DELTA_SHAPE_EXTRA;
#ifdef TOY_DELTA_TRANSPOSED
    /* A [rows, cols] result stored column-major: element (i, j) at j*rows + i; value i*1000 + j. */
    if (w->rank == 2) {
        int64_t rows = w->shape[0], cols = w->shape[1];
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++) a->result[j * rows + i] = (float)(i * 1000 + j);
        out->strides[0] = 1;
        out->strides[1] = rows;
    }
#endif
    return AH_OK;
#endif
}

#ifndef TOY_FUNCTIONS
static const char *toy_name(void) { return "toy plugin"; }
static const ah_plugin_function toy_functions[] = {
    {"name", "the plugin's name", (void (*)(void))toy_name, AH_FFI_STRING, 0, {0}},
};
#define TOY_FUNCTIONS toy_functions
#define TOY_FUNCTION_COUNT 1
#endif

static const char *const toy_patterns[] = {"*.toy_scale", "toy_offset"};

static const ah_plugin_descriptor toy_descriptor = {
    .abi_version = TOY_ABI,
    .struct_size = TOY_STRUCT_SIZE,
    .method_id = TOY_ID,
    .summary = "toy test method",
    .key_patterns = toy_patterns,
    .key_pattern_count = 2,
    .claim_key = toy_claim_key,
    .load = toy_load,
    .module_info = toy_module_info,
#ifdef TOY_NULL_DELTA
    .delta = NULL,
#else
    .delta = toy_delta,
#endif
    .forward = NULL,
    .free_adapter = toy_free,
    .functions = TOY_FUNCTIONS,
    .function_count = TOY_FUNCTION_COUNT,
};

#ifndef TOY_NO_ENTRY
__attribute__((visibility("default"))) const ah_plugin_descriptor *adapterhost_plugin_entry(void) {
#ifdef TOY_NULL_DESCRIPTOR
    return NULL;
#else
    return &toy_descriptor;
#endif
}
#else
/* Something exported, so the library is valid but has no entry. */
__attribute__((visibility("default"))) const ah_plugin_descriptor *not_the_entry(void) { return &toy_descriptor; }
#endif
