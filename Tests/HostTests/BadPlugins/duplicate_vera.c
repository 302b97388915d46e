/* Takes the id of the VeRA example plugin. */
#define TOY_ID "vera"
#include "toy_plugin.h"
