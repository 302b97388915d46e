/*
 * adapterhost_plugin.h — the AdapterHost plugin ABI, version 1.
 *
 * A plugin is a shared library (.so) that adds one adapter method (an adapter file format and
 * its math) to AdapterHost at run time. It exports one C symbol:
 *
 *     const ah_plugin_descriptor *adapterhost_plugin_entry(void);
 *
 * returning a pointer to a static descriptor. The host dlopens the library
 * (RTLD_NOW | RTLD_LOCAL), calls the entry, checks `abi_version` and `struct_size`, and
 * registers the method beside the built-ins. Everything crosses as plain C: no Swift, C++ or
 * language runtime types. Plugins may be written in any language that exports this ABI.
 *
 * OWNERSHIP RULES
 *  - The descriptor and every string and array it points to are owned by the plugin and must
 *    stay valid until the library is unloaded (static storage is the intended use).
 *  - Tensors the host passes in (`const ah_tensor *` arguments) are owned by the host, valid
 *    only for the duration of the call, and read-only: never write through their `data`.
 *    Copy what you keep.
 *  - Tensors the plugin returns (`out` arguments) are owned by the plugin; their data must stay
 *    valid until the next call on the same adapter, or `free_adapter`. The host copies them.
 *  - Strings the host passes (`const char *`) are valid for the duration of the call.
 *  - A string an extra function returns (AH_FFI_STRING) is owned by the plugin, must not be
 *    NULL, and must stay valid until the next call into the plugin; the host copies it.
 *  - `void *adapter` handles are created by `load` and released by exactly one `free_adapter`.
 *  - Calls on one adapter handle are never concurrent; different handles may be used from
 *    different threads at once. Extra functions (the function table) may be called between
 *    any two other calls, never concurrently with another call into the same plugin. (This
 *    host serialises every call into one plugin, which satisfies both rules; plugins should
 *    rely on the rules, not on that.)
 *  - The host never unloads (dlclose) a plugin it loaded: language runtimes (Swift, Rust, …)
 *    cannot be unloaded safely, and adapters may outlive the registry.
 *
 * VERSIONING
 *  `abi_version` must equal the host's AH_PLUGIN_ABI_VERSION. `struct_size` (descriptor, and
 *  ah_host_api in the other direction) must be at least the size of the v1 struct: fields may
 *  only ever be appended, and a reader ignores fields past the size it knows. A struct smaller
 *  than v1's is rejected.
 *
 * ERRORS
 *  Every fallible function returns an ah_status; on failure it fills `err` (code = the status,
 *  message = one line, NUL-terminated, truncated to fit). The host zeroes `err` (and any `out`
 *  struct) before each call, and reports the plugin path, the method id, the module and that
 *  message. A status outside the ah_status values is reported as a plugin error too.
 */
#ifndef ADAPTERHOST_PLUGIN_H
#define ADAPTERHOST_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AH_PLUGIN_ABI_VERSION 1u
#define AH_PLUGIN_ENTRY_SYMBOL "adapterhost_plugin_entry"
#define AH_ERROR_MESSAGE_SIZE 512

/* Status codes. */
typedef enum {
    AH_OK = 0,
    AH_ERR_INVALID_INPUT = 1,  /* the adapter file is malformed for this method */
    AH_ERR_UNSUPPORTED = 2,    /* valid, but not something this plugin handles */
    AH_ERR_OUT_OF_MEMORY = 3,
    AH_ERR_INTERNAL = 4
} ah_status;

typedef struct {
    int32_t code;                          /* an ah_status */
    char message[AH_ERROR_MESSAGE_SIZE];   /* one line, NUL-terminated */
} ah_error;

/* Element types (values are part of the ABI; never renumber). */
typedef enum {
    AH_DTYPE_F32 = 0,
    AH_DTYPE_F16 = 1,
    AH_DTYPE_BF16 = 2,
    AH_DTYPE_F64 = 3,
    AH_DTYPE_I64 = 4,
    AH_DTYPE_I32 = 5,
    AH_DTYPE_U8 = 6
} ah_dtype;

#define AH_MAX_RANK 8

/* A strided view of a tensor. Strides count elements, not bytes, and are >= 0. Tensors the
   plugin returns may use any such strides (the host copies through them); tensors the host
   passes are contiguous (row-major). */
typedef struct {
    void *data;
    int32_t dtype;            /* an ah_dtype */
    int32_t rank;             /* 0..AH_MAX_RANK */
    int64_t shape[AH_MAX_RANK];
    int64_t strides[AH_MAX_RANK];
} ah_tensor;

/* Layer kinds for bypass (forward-time) application. A 1x1 convolution (stride 1, no padding)
 * is pointwise, and the host may present it as AH_LAYER_LINEAR over rows of pixels ([..., in]
 * in, [..., out] out): a module with [out, in, 1, 1] factors reads them as [out, in] matrices
 * there, or returns AH_ERR_UNSUPPORTED to get the dense-delta path. */
typedef enum {
    AH_LAYER_LINEAR = 0,
    AH_LAYER_CONV2D = 1
} ah_layer_kind;

/* The layer a bypass term is computed for: a convolution's output size depends on its stride
   and padding, so `forward` needs them (kernel size = the module's own). */
typedef struct {
    int32_t kind;             /* an ah_layer_kind */
    int32_t stride;           /* conv2d: stride (both axes); 1 for linear */
    int32_t padding;          /* conv2d: zero padding (both axes); 0 for linear */
} ah_layer;

/* ---- Host services, passed to `load` ------------------------------------------------- */

typedef struct ah_source ah_source; /* opaque: the adapter file being loaded */

typedef struct {
    uint32_t abi_version;     /* AH_PLUGIN_ABI_VERSION of the host */
    uint32_t struct_size;     /* sizeof(ah_host_api) as the host compiled it */
    /* Keys of the file, in file order. The string is valid during `load`. */
    size_t (*key_count)(const ah_source *source);
    const char *(*key_at)(const ah_source *source, size_t index);
    /* A metadata value, or NULL when absent. Valid during `load`. */
    const char *(*metadata)(const ah_source *source, const char *name);
    /* The tensor under `key`, widened to F32 and contiguous; valid during `load`. */
    int32_t (*get_tensor_f32)(const ah_source *source, const char *key, ah_tensor *out, ah_error *err);
} ah_host_api;

/* ---- Per-module facts ------------------------------------------------------------------- */

typedef struct {
    const char *module_type;  /* e.g. "vera"; owned by the adapter */
    int32_t rank;             /* 0 when not low-rank */
    float alpha;              /* NaN when none */
    int32_t depends_on_weight;/* 1 when the delta reads the current weight */
    int32_t changes_bias;     /* 1 when `delta` may also return a bias delta (reserved; 0 in v1) */
} ah_module_info;

/* ---- Extra functions called through libffi --------------------------------------------- */

/* Argument and return types for extra functions (a small fixed set). */
typedef enum {
    AH_FFI_VOID = 0,    /* return type only */
    AH_FFI_I32 = 1,     /* int32_t */
    AH_FFI_I64 = 2,     /* int64_t */
    AH_FFI_F32 = 3,     /* float */
    AH_FFI_F64 = 4,     /* double */
    AH_FFI_STRING = 5,  /* const char * (host-owned, valid during the call; as a return type:
                           plugin-owned static storage) */
    AH_FFI_POINTER = 6  /* void * (as an argument: an adapter handle, or NULL) */
} ah_ffi_type;

#define AH_MAX_FFI_ARGS 8

/* A named function the host can call with arguments it only knows at run time
 * (e.g. per-method options: `set_option(name, value)`). Names are unique within a plugin and
 * match [A-Za-z_][A-Za-z0-9_]*; the host checks argument count and types against this entry
 * before every call. */
typedef struct {
    const char *name;
    const char *doc;                     /* one line (NULL = none) */
    void (*fn)(void);                    /* cast to the real signature by libffi */
    int32_t return_type;                 /* an ah_ffi_type */
    int32_t arg_count;                   /* 0..AH_MAX_FFI_ARGS */
    int32_t arg_types[AH_MAX_FFI_ARGS];  /* ah_ffi_type each, never AH_FFI_VOID */
} ah_plugin_function;

/* ---- The descriptor --------------------------------------------------------------------- */

typedef struct {
    uint32_t abi_version;     /* must be AH_PLUGIN_ABI_VERSION */
    uint32_t struct_size;     /* sizeof(ah_plugin_descriptor) as the plugin compiled it */
    const char *method_id;    /* unique, e.g. "vera"; [a-z0-9_-]+ */
    const char *summary;      /* one line for listings */
    /* Glob patterns (`*` = any run of characters) of the keys this method recognises, for
       listings and a quick pre-filter; `claim_key` decides. */
    const char *const *key_patterns;
    size_t key_pattern_count;

    /* Does this key belong to this method? If so return 1 and write the module name it belongs
       to (NUL-terminated, within `module_out_size` bytes) into `module_out`; "" for keys shared
       by the whole file (they are handed to the plugin through `host` but are not modules).
       Else 0. Any other return value, or a name without a NUL inside the buffer, is a plugin
       error. A file whose claimed keys are all shared is not taken by the method. */
    int32_t (*claim_key)(const char *key, char *module_out, size_t module_out_size);

    /* Loads the modules named in `modules` (in this order; indices below refer to it; never
       the shared "") from the source through `host`. On success stores a non-NULL handle in
       `*adapter_out`. */
    int32_t (*load)(const ah_host_api *host, const ah_source *source, const char *const *modules,
                    size_t module_count, void **adapter_out, ah_error *err);

    /* Facts about module `index`. */
    int32_t (*module_info)(void *adapter, size_t index, ah_module_info *out, ah_error *err);

    /* The weight delta of module `index` at `strength` for the current weight `weight`
       (F32, contiguous, the target's shape). Writes an F32 tensor of the same shape into `out`
       (plugin-owned, see OWNERSHIP RULES). The host checks dtype and shape and refuses
       anything else. */
    int32_t (*delta)(void *adapter, size_t index, const ah_tensor *weight, float strength,
                     ah_tensor *out, ah_error *err);

    /* Optional (NULL when absent): bypass mode, the module's additive contribution to the
       layer's output for input `x` (F32, contiguous; linear: [..., in] -> [..., out];
       conv2d: [N, C, H, W] -> [N, O, H', W']). Returning AH_ERR_UNSUPPORTED (e.g. for a layer
       kind the module has no cheap form for) makes the host use the dense delta instead. */
    int32_t (*forward)(void *adapter, size_t index, const ah_tensor *x, const ah_layer *layer,
                       float strength, ah_tensor *out, ah_error *err);

    void (*free_adapter)(void *adapter);

    /* Extra functions, called by name through libffi. */
    const ah_plugin_function *functions;
    size_t function_count;
} ah_plugin_descriptor;

typedef const ah_plugin_descriptor *(*ah_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif
#endif /* ADAPTERHOST_PLUGIN_H */
