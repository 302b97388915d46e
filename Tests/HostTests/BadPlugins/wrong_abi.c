/* Built for a future ABI version. */
#define TOY_ABI 2u
#include "toy_plugin.h"
