/* A function table entry with an argument type that is no ah_ffi_type. */
#define TOY_ID "bad-type"
static void f(void) {}
#include "adapterhost_plugin.h"
static const ah_plugin_function bad_functions[] = {
    {"f", "", f, AH_FFI_VOID, 1, {42}},
};
#define TOY_FUNCTIONS bad_functions
#define TOY_FUNCTION_COUNT 1
#include "toy_plugin.h"
