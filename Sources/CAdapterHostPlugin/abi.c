// The plugin ABI is header-only; this file gives the C target a translation unit and checks,
// at compile time, the layout facts plugins written in other languages rely on.
#include "adapterhost_plugin.h"

_Static_assert(sizeof(ah_tensor) == 8 + 4 + 4 + 8 * 8 + 8 * 8, "ah_tensor layout is part of ABI v1");
_Static_assert(sizeof(ah_error) == 4 + AH_ERROR_MESSAGE_SIZE, "ah_error layout is part of ABI v1");
_Static_assert(AH_PLUGIN_ABI_VERSION == 1u, "update the layout checks with the version");
_Static_assert(sizeof(ah_layer) == 3 * 4, "ah_layer layout is part of ABI v1");
