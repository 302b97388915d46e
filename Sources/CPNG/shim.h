// libpng (Debian: libpng-dev), for writing PNGs with A1111's `parameters` text chunk.
#include <png.h>
