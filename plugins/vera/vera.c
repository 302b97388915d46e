/*
 * vera.c — an AdapterHost plugin for PEFT's VeRA (Vector-based Random Matrix Adaptation,
 * Kopiczko et al. 2023), as saved by PEFT (`PeftModel.save_pretrained` /
 * `get_peft_model_state_dict`) with `save_projection=True`.
 *
 * File layout (PEFT):
 *   <prefix><module>.vera_lambda_b   [out]   per module (PEFT's key prefix: "base_model.model.")
 *   <prefix><module>.vera_lambda_d   [r]     per module
 *   base_model.vera_A                [r, in_max]   shared projection, sized for the widest layer
 *   base_model.vera_B                [out_max, r]  shared projection
 *
 * Math (peft/tuners/vera/layer.py, Linear.get_delta_weight): the shared projections are
 * sliced to the layer, A' = vera_A[:, :in], B' = vera_B[:out, :], and
 *   dW = (lambda_b[:, None] * B') @ (lambda_d[:, None] * A')      [out, in]
 * transposed when the layer stores its weight as [in, out] (fan_in_fan_out, GPT-2's Conv1D).
 * There is no alpha/rank scale. The host's strength multiplies dW. Bypass form (forward):
 *   y = strength * lambda_b * (B' @ (lambda_d * (A' @ x))).
 *
 * Options (extra functions): set_option("fan_in_fan_out", 0|1) mirrors VeraConfig's field and
 * is captured by each adapter when it is loaded. Files saved with save_projection=False
 * (projections regenerated from torch's PRNG) are refused: this plugin does not reproduce torch's
 * generator.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapterhost_plugin.h"

#define VERA_PLUGIN_VERSION "1.0"

/* ---- small helpers ------------------------------------------------------------------------ */

static int32_t fail(ah_error *err, int32_t code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* Is `key` a shared projection? `vera_A`/`vera_B` alone or after a "." (PEFT writes
   "base_model.vera_A"; other savers may drop or change the prefix). */
static int is_projection(const char *key, char which) {
    char bare[8] = "vera_X", dotted[9] = ".vera_X";
    bare[5] = which;
    dotted[6] = which;
    return strcmp(key, bare) == 0 || ends_with(key, dotted);
}

/* ---- options ------------------------------------------------------------------------------ */

/* Plugin-wide options, read when an adapter is loaded. The host serialises calls into a plugin
   (see OWNERSHIP RULES), so plain globals are enough. */
static int option_fan_in_fan_out = 0;

static int32_t vera_set_option(const char *name, double value) {
    if (name && strcmp(name, "fan_in_fan_out") == 0) {
        if (value != 0.0 && value != 1.0) return -2;
        option_fan_in_fan_out = value != 0.0;
        return 0;
    }
    return -1;
}

static double vera_get_option(const char *name) {
    if (name && strcmp(name, "fan_in_fan_out") == 0) return option_fan_in_fan_out;
    return NAN;
}

static const char *vera_describe(void) {
    static char text[256];
    snprintf(text, sizeof text,
             "PEFT VeRA plugin " VERA_PLUGIN_VERSION " (C): dW = (lambda_b*B)(lambda_d*A), fan_in_fan_out=%d",
             option_fan_in_fan_out);
    return text;
}

/* ---- the adapter -------------------------------------------------------------------------- */

typedef struct {
    float *lambda_b;   /* [out] */
    float *lambda_d;   /* [r] */
    int64_t out;
} vera_module;

typedef struct {
    int64_t r, in_max, out_max;
    float *A;          /* [r, in_max] */
    float *B;          /* [out_max, r] */
    size_t module_count;
    vera_module *modules;
    int fan_in_fan_out;
    float *result;     /* the last delta/forward output (plugin-owned, see OWNERSHIP RULES) */
    size_t result_capacity;
} vera_adapter;

static void vera_free_adapter(void *handle) {
    vera_adapter *a = handle;
    if (!a) return;
    for (size_t i = 0; i < a->module_count; i++) {
        free(a->modules[i].lambda_b);
        free(a->modules[i].lambda_d);
    }
    free(a->modules);
    free(a->A);
    free(a->B);
    free(a->result);
    free(a);
}

static int32_t vera_claim_key(const char *key, char *module_out, size_t module_out_size) {
    static const char *suffixes[] = {".vera_lambda_b", ".vera_lambda_d"};
    if (module_out_size == 0) return 0;
    for (int s = 0; s < 2; s++) {
        if (ends_with(key, suffixes[s])) {
            size_t n = strlen(key) - strlen(suffixes[s]);
            if (n == 0 || n + 1 > module_out_size) return 0;
            memcpy(module_out, key, n);
            module_out[n] = '\0';
            return 1;
        }
    }
    if (is_projection(key, 'A') || is_projection(key, 'B')) {
        module_out[0] = '\0';
        return 1;
    }
    return 0;
}

/* Copies the F32 tensor under `key` (contiguous, from the host) into a malloc'd buffer,
   checking its rank. Returns NULL after filling err. */
static float *copy_tensor(const ah_host_api *host, const ah_source *src, const char *key, int rank,
                          int64_t shape[2], ah_error *err) {
    ah_tensor t;
    memset(&t, 0, sizeof t);
    int32_t st = host->get_tensor_f32(src, key, &t, err);
    if (st != AH_OK) return NULL;
    if (t.rank != rank) {
        fail(err, AH_ERR_INVALID_INPUT, "'%s' has rank %d, expected %d", key, t.rank, rank);
        return NULL;
    }
    int64_t count = 1;
    for (int i = 0; i < rank; i++) { shape[i] = t.shape[i]; count *= t.shape[i]; }
    float *copy = malloc((size_t)(count > 0 ? count : 1) * sizeof(float));
    if (!copy) { fail(err, AH_ERR_OUT_OF_MEMORY, "out of memory copying '%s'", key); return NULL; }
    memcpy(copy, t.data, (size_t)count * sizeof(float));
    return copy;
}

/* The key of the shared projection `which` ('A' or 'B'); exactly one must exist. */
static const char *find_projection(const ah_host_api *host, const ah_source *src, char which, ah_error *err) {
    const char *found = NULL;
    size_t n = host->key_count(src);
    for (size_t i = 0; i < n; i++) {
        const char *key = host->key_at(src, i);
        if (key && is_projection(key, which)) {
            if (found) {
                fail(err, AH_ERR_INVALID_INPUT, "two shared projections vera_%c ('%s', '%s')", which, found, key);
                return NULL;
            }
            found = key;
        }
    }
    if (!found)
        fail(err, AH_ERR_UNSUPPORTED,
             "no shared projection vera_%c: the adapter was saved with save_projection=False; PEFT would "
             "regenerate it from projection_prng_key with torch's generator, which this plugin does not reproduce",
             which);
    return found;
}

static int32_t vera_load(const ah_host_api *host, const ah_source *src, const char *const *modules,
                         size_t module_count, void **adapter_out, ah_error *err) {
    if (!host || host->struct_size < sizeof(ah_host_api))
        return fail(err, AH_ERR_INTERNAL, "host API table is older than this plugin's");
    vera_adapter *a = calloc(1, sizeof *a);
    if (!a) return fail(err, AH_ERR_OUT_OF_MEMORY, "out of memory");
    a->fan_in_fan_out = option_fan_in_fan_out;

    const char *keyA = find_projection(host, src, 'A', err);
    const char *keyB = keyA ? find_projection(host, src, 'B', err) : NULL;
    if (!keyA || !keyB) { vera_free_adapter(a); return err->code; }
    int64_t shapeA[2], shapeB[2];
    if (!(a->A = copy_tensor(host, src, keyA, 2, shapeA, err)) ||
        !(a->B = copy_tensor(host, src, keyB, 2, shapeB, err))) {
        vera_free_adapter(a);
        return err->code;
    }
    a->r = shapeA[0];
    a->in_max = shapeA[1];
    a->out_max = shapeB[0];
    if (shapeB[1] != a->r || a->r <= 0) {
        vera_free_adapter(a);
        return fail(err, AH_ERR_INVALID_INPUT, "vera_A is [%lld, %lld] but vera_B is [%lld, %lld]: ranks differ",
                    (long long)shapeA[0], (long long)shapeA[1], (long long)shapeB[0], (long long)shapeB[1]);
    }

    a->modules = calloc(module_count ? module_count : 1, sizeof *a->modules);
    if (!a->modules) { vera_free_adapter(a); return fail(err, AH_ERR_OUT_OF_MEMORY, "out of memory"); }
    a->module_count = module_count;
    char key[4096];
    for (size_t i = 0; i < module_count; i++) {
        vera_module *m = &a->modules[i];
        int64_t sb[2], sd[2];
        snprintf(key, sizeof key, "%s.vera_lambda_b", modules[i]);
        if (!(m->lambda_b = copy_tensor(host, src, key, 1, sb, err))) { vera_free_adapter(a); return err->code; }
        snprintf(key, sizeof key, "%s.vera_lambda_d", modules[i]);
        if (!(m->lambda_d = copy_tensor(host, src, key, 1, sd, err))) { vera_free_adapter(a); return err->code; }
        m->out = sb[0];
        if (sd[0] != a->r) {
            vera_free_adapter(a);
            return fail(err, AH_ERR_INVALID_INPUT, "%s: vera_lambda_d has %lld entries but the projections have rank %lld",
                        modules[i], (long long)sd[0], (long long)a->r);
        }
        if (m->out > a->out_max) {
            vera_free_adapter(a);
            return fail(err, AH_ERR_INVALID_INPUT, "%s: vera_lambda_b has %lld entries but vera_B has only %lld rows",
                        modules[i], (long long)m->out, (long long)a->out_max);
        }
    }
    *adapter_out = a;
    return AH_OK;
}

static int32_t vera_module_info(void *handle, size_t index, ah_module_info *out, ah_error *err) {
    vera_adapter *a = handle;
    if (index >= a->module_count) return fail(err, AH_ERR_INTERNAL, "module index %zu out of range", index);
    out->module_type = "vera";
    out->rank = (int32_t)a->r;
    out->alpha = NAN;
    out->depends_on_weight = 0;
    out->changes_bias = 0;
    return AH_OK;
}

static float *result_buffer(vera_adapter *a, size_t count, ah_error *err) {
    if (count > a->result_capacity) {
        float *p = realloc(a->result, (count ? count : 1) * sizeof(float));
        if (!p) { fail(err, AH_ERR_OUT_OF_MEMORY, "out of memory for %zu floats", count); return NULL; }
        a->result = p;
        a->result_capacity = count;
    }
    return a->result;
}

static void set_contiguous(ah_tensor *t, void *data, int32_t rank, const int64_t *shape) {
    t->data = data;
    t->dtype = AH_DTYPE_F32;
    t->rank = rank;
    int64_t stride = 1;
    for (int32_t d = rank - 1; d >= 0; d--) {
        t->shape[d] = shape[d];
        t->strides[d] = stride;
        stride *= shape[d];
    }
}

static int32_t vera_delta(void *handle, size_t index, const ah_tensor *weight, float strength,
                          ah_tensor *out, ah_error *err) {
    vera_adapter *a = handle;
    if (index >= a->module_count) return fail(err, AH_ERR_INTERNAL, "module index %zu out of range", index);
    const vera_module *m = &a->modules[index];
    /* A linear weight [out, in], or the same layer stored as a 1x1 convolution [out, in, 1, 1]
       (ldm checkpoints' proj_in/proj_out); fan_in_fan_out: [in, out]. PEFT's VeRA has no
       convolution form. */
    int is_linear = weight->rank == 2 || (weight->rank == 4 && weight->shape[2] == 1 && weight->shape[3] == 1);
    if (!is_linear)
        return fail(err, AH_ERR_UNSUPPORTED, "VeRA adapts linear layers; the weight has rank %d", weight->rank);
    int64_t rows = weight->shape[0], cols = weight->shape[1];
    int64_t out_f = a->fan_in_fan_out ? cols : rows, in_f = a->fan_in_fan_out ? rows : cols;
    if (a->fan_in_fan_out && weight->rank != 2)
        return fail(err, AH_ERR_UNSUPPORTED, "fan_in_fan_out needs a 2-D weight, got rank %d", weight->rank);
    if (out_f != m->out)
        return fail(err, AH_ERR_INVALID_INPUT, "the layer has %lld output features but vera_lambda_b has %lld",
                    (long long)out_f, (long long)m->out);
    if (in_f > a->in_max)
        return fail(err, AH_ERR_INVALID_INPUT, "the layer has %lld input features but vera_A covers only %lld",
                    (long long)in_f, (long long)a->in_max);
    float *d = result_buffer(a, (size_t)(rows * cols), err);
    if (!d) return err->code;
    const int64_t r = a->r;
    /* dW[o][i] = lambda_b[o] * sum_k B[o][k] * lambda_d[k] * A[k][i], accumulated in double. */
    double *bd = malloc((size_t)r * sizeof(double));
    if (!bd) return fail(err, AH_ERR_OUT_OF_MEMORY, "out of memory");
    for (int64_t o = 0; o < out_f; o++) {
        for (int64_t k = 0; k < r; k++)
            bd[k] = (double)m->lambda_b[o] * a->B[o * r + k] * m->lambda_d[k];
        for (int64_t i = 0; i < in_f; i++) {
            double s = 0;
            for (int64_t k = 0; k < r; k++) s += bd[k] * a->A[k * a->in_max + i];
            float v = (float)(s * strength);
            if (a->fan_in_fan_out) d[i * out_f + o] = v; else d[o * in_f + i] = v;
        }
    }
    free(bd);
    set_contiguous(out, d, weight->rank, weight->shape);
    return AH_OK;
}

static int32_t vera_forward(void *handle, size_t index, const ah_tensor *x, const ah_layer *layer,
                            float strength, ah_tensor *out, ah_error *err) {
    vera_adapter *a = handle;
    if (index >= a->module_count) return fail(err, AH_ERR_INTERNAL, "module index %zu out of range", index);
    /* Only plain linear layers have a cheap form here; the host falls back to the dense delta. */
    if (layer->kind != AH_LAYER_LINEAR || a->fan_in_fan_out || x->rank < 1)
        return fail(err, AH_ERR_UNSUPPORTED, "no bypass form for this layer");
    const vera_module *m = &a->modules[index];
    int64_t in_f = x->shape[x->rank - 1], rows = 1;
    for (int32_t d = 0; d + 1 < x->rank; d++) rows *= x->shape[d];
    if (in_f > a->in_max)
        return fail(err, AH_ERR_INVALID_INPUT, "input has %lld features but vera_A covers only %lld",
                    (long long)in_f, (long long)a->in_max);
    float *y = result_buffer(a, (size_t)(rows * m->out), err);
    if (!y) return err->code;
    const float *xs = x->data;
    const int64_t r = a->r;
    double *h = malloc((size_t)r * sizeof(double));
    if (!h) return fail(err, AH_ERR_OUT_OF_MEMORY, "out of memory");
    for (int64_t n = 0; n < rows; n++) {
        const float *xn = xs + n * in_f;
        for (int64_t k = 0; k < r; k++) {
            double s = 0;
            for (int64_t i = 0; i < in_f; i++) s += (double)a->A[k * a->in_max + i] * xn[i];
            h[k] = s * m->lambda_d[k];
        }
        for (int64_t o = 0; o < m->out; o++) {
            double s = 0;
            for (int64_t k = 0; k < r; k++) s += (double)a->B[o * r + k] * h[k];
            y[n * m->out + o] = (float)(s * m->lambda_b[o] * strength);
        }
    }
    free(h);
    int64_t shape[AH_MAX_RANK];
    for (int32_t d = 0; d < x->rank; d++) shape[d] = x->shape[d];
    shape[x->rank - 1] = m->out;
    set_contiguous(out, y, x->rank, shape);
    return AH_OK;
}

/* ---- descriptor --------------------------------------------------------------------------- */

static const char *const vera_patterns[] = {"*.vera_lambda_b", "*.vera_lambda_d", "*vera_A", "*vera_B"};

static const ah_plugin_function vera_functions[] = {
    {"describe", "one line about the plugin and its options", (void (*)(void))vera_describe,
     AH_FFI_STRING, 0, {0}},
    {"set_option", "set an option read at load: fan_in_fan_out (0|1); 0 = ok, -1 = unknown, -2 = bad value",
     (void (*)(void))vera_set_option, AH_FFI_I32, 2, {AH_FFI_STRING, AH_FFI_F64}},
    {"get_option", "the value of an option (NaN when unknown)", (void (*)(void))vera_get_option,
     AH_FFI_F64, 1, {AH_FFI_STRING}},
};

static const ah_plugin_descriptor vera_descriptor = {
    .abi_version = AH_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(ah_plugin_descriptor),
    .method_id = "vera",
    .summary = "PEFT VeRA: shared random projections scaled by per-module vectors (save_projection=True)",
    .key_patterns = vera_patterns,
    .key_pattern_count = sizeof vera_patterns / sizeof vera_patterns[0],
    .claim_key = vera_claim_key,
    .load = vera_load,
    .module_info = vera_module_info,
    .delta = vera_delta,
    .forward = vera_forward,
    .free_adapter = vera_free_adapter,
    .functions = vera_functions,
    .function_count = sizeof vera_functions / sizeof vera_functions[0],
};

__attribute__((visibility("default"))) const ah_plugin_descriptor *adapterhost_plugin_entry(void) {
    return &vera_descriptor;
}
