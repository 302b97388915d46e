/* struct_size smaller than the v1 descriptor. */
#define TOY_STRUCT_SIZE 16
#include "toy_plugin.h"
