/* Exports no adapterhost_plugin_entry. */
#define TOY_NO_ENTRY
#include "toy_plugin.h"
