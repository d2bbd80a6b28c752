/* 07_custom_peft.c - a PEFT method of your own through the interface the built-in methods
   implement: a low-rank update of each attention output projection only,
      o_proj(x) = x W^T + (alpha / r) (x A^T) B^T,   A (r, in) small random, B (out, r) zero,
   written with the autograd ops. The method brings three hooks (add its parameters, give them
   their first values, change the linear layers it wants); ft_train, the switch-off to the base
   model, checkpoints and finetune.h's own adapter file then work for it as for LoRA.
   usage: build/07_custom_peft MODEL.gguf [train.jsonl]                        FT_STEPS=N: N steps
   build: make examples (links build/finetune.o, the implementation compiled once), or as one file:
   cc -O2 -march=native -I. -DFINETUNE_IMPLEMENTATION examples/07_custom_peft.c -o 07_custom_peft -lm -lpthread */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "finetune.h"

enum { RANK = 4, MAX_LAYERS = 64 };
typedef struct lowrank { ft_tensor *A[MAX_LAYERS], *B[MAX_LAYERS]; float scale; } lowrank;

/* add: an A and a B per layer, named as you like (they are the adapter file's tensor names) */
static ft_result lowrank_add(ft_peft *p, ft_params *P, void *user) {
    lowrank *lr = user;
    const ft_model_config *c = ft_model_config_get(ft_peft_model(p));
    int64_t in = c->n_head * c->head_dim, out = c->n_embd;
    for (int l = 0; l < c->n_layer && l < MAX_LAYERS; l++) {
        char name[64];
        snprintf(name, sizeof name, "layers.%d.o_proj.lowrank_A", l);
        lr->A[l] = ft_params_add(P, name, 2, (int64_t[2]){RANK, in});
        snprintf(name, sizeof name, "layers.%d.o_proj.lowrank_B", l);
        lr->B[l] = ft_params_add(P, name, 2, (int64_t[2]){out, RANK});
        if (!lr->A[l] || !lr->B[l]) return FT_ERR_NOMEM;
    }
    return FT_OK;
}

/* init: A uniform in +-1/sqrt(in), B zero, so the model starts unchanged */
static ft_result lowrank_init(ft_peft *p, ft_rng *rng, void *user) {
    lowrank *lr = user;
    const ft_model_config *c = ft_model_config_get(ft_peft_model(p));
    for (int l = 0; l < c->n_layer && l < MAX_LAYERS; l++) {
        float *a = lr->A[l]->data, *b = lr->B[l]->data, bound = 1.0f / sqrtf((float)lr->A[l]->shape[1]);
        for (int64_t i = 0; i < ft_numel(lr->A[l]); i++) a[i] = bound * (2.0f * ft_rng_uniform(rng) - 1.0f);
        for (int64_t i = 0; i < ft_numel(lr->B[l]); i++) b[i] = 0.0f;
    }
    return FT_OK;
}

/* linear: every linear layer of the model comes through here; change o_proj, leave the rest */
static ft_tensor *lowrank_linear(ft_ctx *ctx, ft_peft *p, ft_tensor *x, ft_tensor *W, ft_tensor *bias,
                                 int layer, int which, void *user) {
    lowrank *lr = user;
    ft_tensor *y = ft_matmul(ctx, x, W, 0, 1);                                /* x W^T            */
    (void)p;
    if (bias) y = ft_add(ctx, y, bias);
    if (layer < 0 || layer >= MAX_LAYERS || which != FT_SITE_O) return y;
    ft_tensor *low = ft_matmul(ctx, ft_matmul(ctx, x, lr->A[layer], 0, 1), lr->B[layer], 0, 1);
    return ft_add(ctx, y, ft_scale(ctx, low, lr->scale));                     /* + s (x A^T) B^T  */
}

static int progress(void *user, const ft_step_info *s) {
    double *first_last = user;
    if (s->step == 1) first_last[0] = s->loss;
    first_last[1] = s->loss;
    printf("step %lld/%lld  loss %.4f\n", (long long)s->step, (long long)s->steps, s->loss);
    return 0;
}

int main(int argc, char **argv) {
    const char *train_path = argc > 2 ? argv[2] : "examples/data/dates_train.jsonl";
    const char *steps = getenv("FT_STEPS");
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [train.jsonl]\n", argv[0]);
        return 2;
    }
    static lowrank lr = {{0}, {0}, 2.0f};                        /* alpha / r = 8 / 4 */
    ft_peft_method_def def = {"lowrank_o_proj", lowrank_add, lowrank_init, lowrank_linear, NULL, &lr};
    ft_train_opts to = ft_train_opts_default(FT_OBJ_SFT);
    double first_last[2] = {0, 0};
    to.steps = steps ? atoll(steps) : 20;
    to.batch = 8;
    to.lr = 1e-3f;
    to.on_step = progress;
    to.user = first_last;
    ft_model *m = NULL;
    ft_ctx *ctx = NULL;
    ft_peft *p = NULL;
    ft_dataset *train = NULL;
    ft_result r = ft_model_load(&m, argv[1], NULL);
    if (r == FT_OK) r = ft_ctx_init(&ctx, NULL);
    if (r == FT_OK) r = ft_peft_attach_custom(&p, m, &def, 1);
    if (r == FT_OK) printf("%s: %lld trainable parameters\n", def.name, (long long)ft_params_numel(ft_peft_params(p)));
    if (r == FT_OK) r = ft_dataset_load(&train, train_path, ft_model_tokenizer(m), ft_model_chat_template(m), NULL);
    if (r == FT_OK) r = ft_train(ctx, m, ft_peft_params(p), train, &to, NULL);
    if (r == FT_OK) printf("%s: loss %.4f -> %.4f\n", def.name, first_last[0], first_last[1]);
    if (r == FT_OK) r = ft_peft_save(p, "adapter_custom.gguf", FT_FORMAT_FINETUNE, NULL);   /* attach + ft_peft_read */
    if (r == FT_OK) printf("wrote adapter_custom.gguf\n");
    if (r != FT_OK) fprintf(stderr, "error: %s\n", ft_last_error());
    ft_dataset_free(train);
    ft_peft_free(p);
    ft_ctx_free(ctx);
    ft_model_free(m);
    return r == FT_OK ? 0 : 1;
}
