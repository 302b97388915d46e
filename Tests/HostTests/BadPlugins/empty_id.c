/* An empty method id. */
#define TOY_ID ""
#include "toy_plugin.h"
