/* 05_merge.c - from adapters to models: a LoRA adapter merged into its base (W + s B A) gives a
   complete model that llama.cpp loads with no adapter at all; two adapters trained on the same base
   (say, for two tasks) merge into one model with TIES (mergekit's definition): each adapter's
   smaller half of changes dropped, a sign elected per weight, the agreeing changes averaged.
   usage: build/05_merge MODEL.gguf ADAPTER [ADAPTER2]     writes merged.gguf (and ties.gguf)
   adapters: llama.cpp LoRA GGUF, a PEFT directory or finetune.h's own, e.g. adapter.gguf from
   02_lora_sft and adapter_dpo.gguf from 03_dpo
   build: make examples (links build/finetune.o, the implementation compiled once), or as one file:
   cc -O2 -march=native -I. -DFINETUNE_IMPLEMENTATION examples/05_merge.c -o 05_merge -lm -lpthread */
#include <stdio.h>
#include "finetune.h"

/* what is in a GGUF file we wrote: its tensors, their bytes, the type of the first layer's q weight */
static ft_result describe(const char *path) {
    ft_gguf *g = NULL;
    double bytes = 0;
    ft_result r = ft_gguf_open(&g, path);
    if (r != FT_OK) return r;
    for (int64_t i = 0; i < ft_gguf_n_tensors(g); i++) bytes += (double)ft_gguf_tensor_at(g, i)->nbytes;
    const ft_gguf_tensor *q = ft_gguf_find_tensor(g, "blk.0.attn_q.weight");
    printf("wrote %s: %lld tensors, %.1f MiB, blk.0.attn_q.weight as %s\n", path, (long long)ft_gguf_n_tensors(g),
           bytes / (1 << 20), q ? ft_type_name(q->type) : "?");
    ft_gguf_close(g);
    return FT_OK;
}

/* MODEL + ADAPTER -> merged.gguf: the linear weights F16, everything else as the base stores it */
static ft_result merge_one(const char *model_path, const char *adapter_path) {
    ft_model *m = NULL;
    ft_peft *adapter = NULL;
    ft_save_opts so = ft_save_opts_default();
    ft_result r = ft_model_load(&m, model_path, NULL);
    if (r == FT_OK) r = ft_peft_load(&adapter, m, adapter_path);    /* its rank, alpha, layers from the file */
    if (r == FT_OK) r = ft_model_save_merged(m, "merged.gguf", &so);
    if (r == FT_OK) r = describe("merged.gguf");
    ft_peft_free(adapter);
    ft_model_free(m);
    return r;
}

/* MODEL + TIES(ADAPTER, ADAPTER2) -> ties.gguf, one tensor at a time (the models are not loaded) */
static ft_result merge_two(const char *model_path, const char *a, const char *b) {
    ft_merge_input in[2] = {{a, 1.0, 0.5}, {b, 1.0, 0.5}};     /* path, weight, density: the share kept */
    ft_merge_opts mo = ft_merge_opts_default(FT_MERGE_TIES);
    ft_merge_stats st;
    mo.type = FT_TYPE_F16;
    ft_result r = ft_merge_models("ties.gguf", model_path, in, 2, &mo, &st);
    if (r == FT_OK) printf("ties: %lld tensors merged, %lld copied from the base\n", (long long)st.merged, (long long)st.copied);
    if (r == FT_OK) r = describe("ties.gguf");
    return r;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf ADAPTER [ADAPTER2]\n", argv[0]);
        return 2;
    }
    ft_result r = merge_one(argv[1], argv[2]);
    if (r == FT_OK && argc > 3) r = merge_two(argv[1], argv[2], argv[3]);
    if (r != FT_OK) fprintf(stderr, "error: %s\n", ft_last_error());
    return r == FT_OK ? 0 : 1;
}
