/* delta returns one row too many. */
#define TOY_ID "wrong-shape"
#define TOY_DELTA_SHAPE_EXTRA 1
#include "toy_plugin.h"
