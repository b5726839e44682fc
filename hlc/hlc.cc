#include "hlc/hlc.h"
