/* A function table entry without a function pointer. */
#define TOY_ID "bad-fn"
#include "adapterhost_plugin.h"
static const ah_plugin_function bad_functions[] = {
    {"f", "", NULL, AH_FFI_VOID, 0, {0}},
};
#define TOY_FUNCTIONS bad_functions
#define TOY_FUNCTION_COUNT 1
#include "toy_plugin.h"
