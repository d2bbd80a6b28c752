/* 00_autograd.c - the smallest training loop: fit a linear map with the tape autograd.
   build: make examples (links build/finetune.o, the implementation compiled once), or as one file:
   cc -O2 -march=native -I. -DFINETUNE_IMPLEMENTATION examples/00_autograd.c -o 00_autograd -lm -lpthread */
#include <stdio.h>
#include "finetune.h"   /* the implementation: build/finetune.o, or -DFINETUNE_IMPLEMENTATION (see below) */

int main(void) {
    ft_ctx *ctx; ft_params *P; int step, i;
    int64_t wshape[2] = {1, 3};
    if (ft_ctx_init(&ctx, NULL) != FT_OK) { fprintf(stderr, "%s\n", ft_last_error()); return 1; }
    ft_params_init(&P);
    ft_tensor *W = ft_params_add(P, "w", 2, wshape);        /* parameters: one block, one for grads */
    ft_params_alloc(P);
    for (step = 0; step < 200; step++) {                      /* fit y = 2a - b + 0.5c */
        ft_ctx_reset(ctx);                                    /* empty tape and activation arena */
        ft_tensor *x = ft_tensor_2d(ctx, 8, 3), *t = ft_tensor_2d(ctx, 8, 1);
        for (i = 0; i < 8; i++) {
            float *xr = (float *)x->data + 3 * i;
            xr[0] = ft_rng_uniform(ft_ctx_rng(ctx)); xr[1] = ft_rng_uniform(ft_ctx_rng(ctx)); xr[2] = 1;
            ((float *)t->data)[i] = 2 * xr[0] - xr[1] + 0.5f;
        }
        ft_tensor *err = ft_sub(ctx, ft_matmul(ctx, x, W, 0, 1), t);   /* x W^T - t */
        ft_tensor *loss = ft_mean(ctx, ft_mul(ctx, err, err));
        if (ft_backward(ctx, loss) != FT_OK) { fprintf(stderr, "%s\n", ft_last_error()); return 1; }
        for (i = 0; i < 3; i++) ((float *)W->data)[i] -= 0.5f * W->grad[i];   /* plain SGD */
        ft_params_zero_grad(P);
    }
    printf("w = %.3f %.3f %.3f\n", ((float *)W->data)[0], ((float *)W->data)[1], ((float *)W->data)[2]);
    ft_params_free(P); ft_ctx_free(ctx);
    return 0;
}
