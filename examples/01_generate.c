/* 01_generate.c - load a GGUF model, chat with it: the prompt goes through the model's chat
   template, the reply is sampled token by token with a KV cache.
   usage: build/01_generate MODEL.gguf ["your question" [max new tokens, default 256]]
   build: make examples (links build/finetune.o, the implementation compiled once), or as one file:
   cc -O2 -march=native -I. -DFINETUNE_IMPLEMENTATION examples/01_generate.c -o 01_generate -lm -lpthread */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "finetune.h"   /* the implementation: build/finetune.o, or -DFINETUNE_IMPLEMENTATION (see below) */

int main(int argc, char **argv) {
    ft_model *m; ft_ctx *ctx; ft_kv_cache *kv; ft_rng rng; ft_gen_opts go;
    ft_chat_msg msg; char text[4096]; int32_t ids[1024], out[256], stop[FT_MAX_STOP]; int64_t n, out_len;
    const int32_t *prompts[1];
    int max_new = argc > 3 ? atoi(argv[3]) : 256;
    if (argc < 2 || max_new < 1 || max_new > 256) { fprintf(stderr, "usage: %s MODEL.gguf [question [max_new <= 256]]\n", argv[0]); return 2; }
    if (ft_model_load(&m, argv[1], NULL) != FT_OK || ft_ctx_init(&ctx, NULL) != FT_OK) {
        fprintf(stderr, "%s\n", ft_last_error());
        return 1;
    }
    msg.role = "user";
    msg.content = argc > 2 ? argv[2] : "Give me three facts about the Moon.";
    n = ft_chat_apply(ft_model_chat_template(m), &msg, 1, 1, text, sizeof text);   /* <|im_start|>user... */
    if (n >= (int64_t)sizeof text) n = ft_set_error(FT_ERR_INVALID, "the question is too long");
    if (n >= 0) n = ft_tokenize(ft_model_tokenizer(m), text, -1, ids, 1024, 1, 1);
    if (n > 1024) n = ft_set_error(FT_ERR_INVALID, "the question is too long");
    if (n < 0 || ft_kv_cache_init(&kv, m, 1, n + max_new) != FT_OK) {
        fprintf(stderr, "%s\n", ft_last_error());
        ft_ctx_free(ctx); ft_model_free(m);
        return 1;
    }
    memset(&go, 0, sizeof go);
    go.max_new = max_new; go.sample.temperature = 0.7f; go.sample.top_p = 0.9f;
    go.stop = stop; go.n_stop = ft_tokenizer_stop_ids(ft_model_tokenizer(m), stop);
    ft_rng_seed(&rng, 42);
    prompts[0] = ids;
    if (ft_generate(ctx, m, kv, 1, prompts, &n, &go, &rng, out, &out_len, NULL) != FT_OK) {
        fprintf(stderr, "%s\n", ft_last_error());
        ft_kv_cache_free(kv); ft_ctx_free(ctx); ft_model_free(m);
        return 1;
    }
    n = ft_detokenize(ft_model_tokenizer(m), out, out_len, text, sizeof text, 0);
    printf("%.*s\n", (int)n, text);
    ft_kv_cache_free(kv); ft_ctx_free(ctx); ft_model_free(m);
    return 0;
}
