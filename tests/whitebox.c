/* whitebox.c - the tests that reach into the implementation (ft__ functions and types), and the
   gradient checks, as ONE translation unit: the implementation is compiled once for all of them
   instead of once per file (every other test links build/finetune.o). Each file still builds on
   its own (cc -O2 tests/test_kernels.c -lm -lpthread); here FT_TEST_UNITY turns its main into
   test_x_main. The Makefile builds this file three ways: build/test_whitebox (-march=native),
   build/test_whitebox_ref (FT_NO_SIMD: the scalar reference kernels) and, on x86-64,
   build/test_whitebox_avx2 (AVX2 + FMA without AVX-512). FT_WHITEBOX_KERNELS keeps only the
   kernel and NF4 decoder tests (the AVX2 build, and the NEON build that runs under qemu). */
#define FT_TEST_UNITY
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include "ft_test.h"

#include "test_kernels.c"
#include "test_nf4.c"
#ifndef FT_WHITEBOX_KERNELS
#include "test_quant.c"
#include "test_tokenizer.c"
#include "test_model.c"
#include "test_export.c"
#include "test_peft_export.c"
#include "test_peft_ref.c"
#include "test_grad.c"
#endif

int main(void) {
    int failed = 0;
    failed |= test_kernels_main();
    failed |= test_nf4_main();
#ifndef FT_WHITEBOX_KERNELS
    failed |= test_quant_main();
    failed |= test_tokenizer_main();
    failed |= test_model_main();
    failed |= test_export_main();
    failed |= test_peft_export_main();
    failed |= test_peft_ref_main();
    failed |= test_grad_main();
#endif
    printf("# whitebox: %d passed, %d failed\n", ft_test_total_passed, ft_test_total_failed);
    return failed || ft_test_total_failed ? 1 : 0;
}
