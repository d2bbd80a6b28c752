/* 02_lora_sft.c - QLoRA supervised fine-tuning in a page: LoRA on the 4-bit base model, an
   instruction dataset, AdamW with a cosine schedule, the adapter saved for llama.cpp and PEFT.
   usage: build/02_lora_sft MODEL.gguf [train.jsonl]     (default examples/data/dates_train.jsonl)
          FT_STEPS=N: N steps (default 20)
   build: make examples (links build/finetune.o, the implementation compiled once), or as one file:
   cc -O2 -march=native -I. -DFINETUNE_IMPLEMENTATION examples/02_lora_sft.c -o 02_lora_sft -lm -lpthread */
#include <stdio.h>
#include <stdlib.h>
#include "finetune.h"   /* the implementation: build/finetune.o, or -DFINETUNE_IMPLEMENTATION (see below) */

static int progress(void *user, const ft_step_info *s) {
    (void)user;
    fprintf(stderr, "step %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s\n", (long long)s->step, (long long)s->steps, s->loss, s->lr, s->tokens_per_s);
    return 0;                                                  /* non-zero would stop */
}

int main(int argc, char **argv) {
    ft_model *m; ft_ctx *ctx; ft_peft *lora; ft_dataset *data;
    ft_lora_opts lo = {0}; ft_train_opts to = {0};
    const char *train = argc > 2 ? argv[2] : "examples/data/dates_train.jsonl";
    const char *steps = getenv("FT_STEPS");
    if (argc < 2) { fprintf(stderr, "usage: %s MODEL.gguf [train.jsonl]\n", argv[0]); return 2; }
    if (ft_model_load(&m, argv[1], NULL) != FT_OK || ft_ctx_init(&ctx, NULL) != FT_OK) { fprintf(stderr, "%s\n", ft_last_error()); return 1; }
    lo.r = 8; lo.alpha = 16;                                   /* all linear layers by default */
    if (ft_lora_attach(&lora, m, &lo) != FT_OK) { fprintf(stderr, "%s\n", ft_last_error()); return 1; }
    if (ft_dataset_load(&data, train, ft_model_tokenizer(m), ft_model_chat_template(m), NULL) != FT_OK)
        { fprintf(stderr, "%s\n", ft_last_error()); return 1; }   /* names file:line:column */
    to.steps = steps ? atoll(steps) : 20; to.batch = 8; to.lr = 1e-3f; to.on_step = progress;
    if (ft_train(ctx, m, ft_peft_params(lora), data, &to, NULL) != FT_OK) { fprintf(stderr, "%s\n", ft_last_error()); return 1; }
    if (ft_peft_save(lora, "adapter.gguf", FT_FORMAT_LLAMACPP, NULL) != FT_OK ||                  /* llama-cli --lora adapter.gguf */
        ft_peft_save(lora, "peft", FT_FORMAT_PEFT, "HuggingFaceTB/SmolLM2-135M-Instruct") != FT_OK) { fprintf(stderr, "%s\n", ft_last_error()); return 1; }
    ft_dataset_free(data); ft_peft_free(lora); ft_ctx_free(ctx); ft_model_free(m);
    return 0;
}
