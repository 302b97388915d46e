/* delta fails with a message the host must pass through. */
#define TOY_ID "delta-error"
#define TOY_DELTA_FAILS "toy_scale of this module is corrupt"
#include "toy_plugin.h"
