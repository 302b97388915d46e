/* claim_key answers 7 (only 0 or 1 are allowed). */
#define TOY_ID "bad-claim"
#define TOY_CLAIM_ANSWER 7
#include "toy_plugin.h"
