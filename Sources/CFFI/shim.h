// libffi, the plugin boundary's dynamic call mechanism (Debian: libffi-dev).
#include <ffi.h>

// libffi's built-in type descriptors are global variables whose *addresses* a call interface
// keeps (ffi_prep_cif stores them). Swift can only lend a global's address for one call, so
// these accessors hand out the stable addresses.
static inline ffi_type *ah_ffi_type_void(void) { return &ffi_type_void; }
static inline ffi_type *ah_ffi_type_sint32(void) { return &ffi_type_sint32; }
static inline ffi_type *ah_ffi_type_sint64(void) { return &ffi_type_sint64; }
static inline ffi_type *ah_ffi_type_float(void) { return &ffi_type_float; }
static inline ffi_type *ah_ffi_type_double(void) { return &ffi_type_double; }
static inline ffi_type *ah_ffi_type_pointer(void) { return &ffi_type_pointer; }
