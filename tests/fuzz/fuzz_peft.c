/* fuzz_peft.c - libFuzzer harness of the adapter loader, ft_peft_load, onto tests/tiny_model.h's
   model (loaded once). Byte 0 picks what the rest of the input becomes, in this process's
   temporary directory:
      byte 0 % 3 == 0  a PEFT directory: bytes 1-2 (little-endian) the length of
                       adapter_config.json, those bytes, then adapter_model.safetensors
      byte 0 % 3 == 1  a PEFT directory: adapter_config.json from the input, and the valid
                       adapter_model.safetensors of adapter (byte 0 / 3) % 6 of fuzz_common.h
                       (LoRA, DoRA, LoHa, IA3, prompt, prefix), made at start-up
      byte 0 % 3 == 2  a GGUF adapter file (llama.cpp's LoRA or finetune.h's own)
   A loaded adapter is switched off and on, its parameters read, the adapted model run on a fixed
   batch, then the adapter is freed (which detaches it).
   Asserts: after a failed load nothing is attached (another adapter attaches); after ft_peft_free
   the model is the base model again (its logits on the fixed batch are those of the start, bit
   for bit); no memory error, no undefined behaviour, no leak. */
#define _POSIX_C_SOURCE 200809L
#define FINETUNE_IMPLEMENTATION
#include "../../finetune.h"
#include "fuzz_common.h"

static ft_model *model;
static unsigned char *ref_st[FT_FUZZ_PEFT_N_PEFT];
static size_t ref_st_n[FT_FUZZ_PEFT_N_PEFT];
static char dir[1024], cfg_path[1200], st_path[1200], gguf_path[1200];
static ft_ctx *ctx;
static float ref_logits[2 * TINY_V], logits[2 * TINY_V];

/* the model's logits on 2 fixed tokens (few: the GEMMs under coverage instrumentation dominate) */
static void run_model(float *out) {
    static const int32_t ids[2] = {1, 5};
    ft_batch b;
    ft_tensor *y;
    memset(&b, 0, sizeof b);
    b.B = 1;
    b.T = 2;
    b.ids = ids;
    ft_ctx_reset(ctx);
    y = ft_model_forward(ctx, model, &b);
    if (y) memcpy(out, y->data, sizeof logits);
    else memset(out, 0, sizeof logits);
}

static void cleanup(void) {
    int k;
    for (k = 0; k < FT_FUZZ_PEFT_N_PEFT; k++) free(ref_st[k]);
    ft_model_free(model);
    ft_ctx_free(ctx);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    int k;
    (void)argc;
    (void)argv;
    ctx = ft_fuzz_ctx();
    model = ft_fuzz_tiny_model();
    ft_ctx_set_grad(ctx, 0);
    run_model(ref_logits);
    ft_fuzz_path(dir, sizeof dir, "adapter");
    snprintf(cfg_path, sizeof cfg_path, "%s/adapter_config.json", dir);
    snprintf(st_path, sizeof st_path, "%s/adapter_model.safetensors", dir);
    ft_fuzz_path(gguf_path, sizeof gguf_path, "adapter.gguf");
    for (k = 0; k < FT_FUZZ_PEFT_N_PEFT; k++) {
        ft_peft *p = ft_fuzz_peft_attach(model, k);
        FT_FUZZ_MUST(ft_peft_save(p, dir, FT_FORMAT_PEFT, "tiny-test-llama") == FT_OK);
        ref_st[k] = ft_fuzz_slurp(st_path, &ref_st_n[k]);
        FT_FUZZ_MUST(ref_st[k] != NULL);
        ft_peft_free(p);
        ft_fuzz_rmtree(dir, 0);
    }
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ft_peft *p = NULL;
    ft_result r;
    int mode;
    if (size < 1) return 0;
    mode = data[0] % 3;
    if (mode == 0) {
        size_t nc;
        if (size < 3) return 0;
        nc = (size_t)data[1] | (size_t)data[2] << 8;
        if (nc > size - 3) nc = size - 3;
        FT_FUZZ_MUST(ft_mkdirs(dir) == FT_OK);
        ft_fuzz_write(cfg_path, data + 3, nc);
        ft_fuzz_write(st_path, data + 3 + nc, size - 3 - nc);
    } else if (mode == 1) {
        int k = (data[0] / 3) % FT_FUZZ_PEFT_N_PEFT;
        FT_FUZZ_MUST(ft_mkdirs(dir) == FT_OK);
        ft_fuzz_write(cfg_path, data + 1, size - 1);
        ft_fuzz_write(st_path, ref_st[k], ref_st_n[k]);
    } else {
        ft_fuzz_write(gguf_path, data + 1, size - 1);
    }
    r = ft_peft_load(&p, model, mode == 2 ? gguf_path : dir);
    if (r == FT_OK) {
        ft_params *P = ft_peft_params(p);
        int i;
        FT_FUZZ_CHECK(p != NULL && ft_peft_model(p) == model);
        ft_fuzz_sink += (unsigned)strlen(ft_peft_method_name(ft_peft_kind(p)));
        ft_fuzz_sink += (unsigned)ft_peft_virtual_tokens(p);
        ft_peft_set_enabled(p, 0);
        FT_FUZZ_CHECK(!ft_peft_enabled(p));
        ft_peft_set_enabled(p, 1);
        for (i = 0; P && i < ft_params_count(P); i++) {
            ft_tensor *t = ft_params_get(P, i);
            ft_fuzz_touch(t->data, (size_t)ft_numel(t) * sizeof(float));
        }
        run_model(logits);                               /* the adapted model runs */
        ft_peft_free(p);
        run_model(logits);                               /* and is the base model again */
        FT_FUZZ_CHECK(memcmp(logits, ref_logits, sizeof logits) == 0);
    } else {
        FT_FUZZ_CHECK(p == NULL);
    }
    /* nothing stays attached: another adapter attaches (cheaper than a forward on every input) */
    {
        ft_peft_opts o = ft_peft_opts_default(FT_PEFT_IA3);
        FT_FUZZ_CHECK(ft_peft_attach(&p, model, &o) == FT_OK);
        ft_peft_free(p);
    }
    return 0;
}
