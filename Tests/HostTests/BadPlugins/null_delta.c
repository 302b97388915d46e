/* A required function pointer (delta) is NULL. */
#define TOY_NULL_DELTA
#include "toy_plugin.h"
