/* A method id outside [a-z0-9_-]. */
#define TOY_ID "Bad ID!"
#include "toy_plugin.h"
