/* delta returns a column-major (non-contiguous) result: the host must honor strides. */
#define TOY_ID "strided"
#define TOY_DELTA_TRANSPOSED
#include "toy_plugin.h"
