/* The entry returns NULL. */
#define TOY_NULL_DESCRIPTOR
#include "toy_plugin.h"
