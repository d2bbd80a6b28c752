/* compile test: a user of the declarations only; with FT_STATIC it carries its own copy */
#ifdef FT_STATIC
#define FINETUNE_IMPLEMENTATION
#endif
#include "../finetune.h"
#include <stdio.h>

int main(void) {
    ft_ctx *ctx;
    ft_tensor *x, *y;
    if (ft_ctx_init(&ctx, NULL) != FT_OK) { printf("%s\n", ft_last_error()); return 1; }
    x = ft_tensor_2d(ctx, 2, 3);
    y = ft_sum(ctx, ft_silu(ctx, x));
    printf("%s %g %s\n", ft_result_string(ft_ctx_status(ctx)), y ? ((float *)y->data)[0] : -1.0, ft_simd_name());
    ft_ctx_free(ctx);
    return 0;
}
