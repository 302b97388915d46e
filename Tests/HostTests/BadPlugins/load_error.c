/* load fails with a message the host must pass through. */
#define TOY_ID "load-error"
#define TOY_LOAD_FAILS "this toy file version is not supported"
#include "toy_plugin.h"
