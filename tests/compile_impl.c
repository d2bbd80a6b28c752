/* compile test: the implementation in its own translation unit (or, with FT_STATIC, in each) */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
