/* The correct toy plugin (control case). */
#include "toy_plugin.h"
