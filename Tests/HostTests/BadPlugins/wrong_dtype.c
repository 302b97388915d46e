/* delta claims an F16 result. */
#define TOY_ID "wrong-dtype"
#define TOY_DELTA_DTYPE AH_DTYPE_F16
#include "toy_plugin.h"
