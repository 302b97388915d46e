/* A function table entry with arg_count beyond AH_MAX_FFI_ARGS. */
#define TOY_ID "bad-arity"
static void f(void) {}
#include "adapterhost_plugin.h"
static const ah_plugin_function bad_functions[] = {
    {"f", "", f, AH_FFI_VOID, 9, {0}},
};
#define TOY_FUNCTIONS bad_functions
#define TOY_FUNCTION_COUNT 1
#include "toy_plugin.h"
