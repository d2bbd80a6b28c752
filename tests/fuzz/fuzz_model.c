/* fuzz_model.c - libFuzzer harness of the model loader, ft_model_load, on a GGUF written from the
   input to this process's temporary directory (an odd-sized input is also quantized to NF4 at
   load): the metadata checks, the binding of every weight, the NF4 companions, the widening of
   1-D weights, the tokenizer and the chat template. A model that loads runs one forward pass of
   3 tokens (ids inside its vocabulary) without gradients.
   Asserts: a loaded model's configuration is consistent (sizes >= 1, heads divide, the vocabulary
   is the embedding's rows), the logits have the vocabulary's width; no memory error, no undefined
   behaviour, no leak. */
#define _POSIX_C_SOURCE 200809L
#define FINETUNE_IMPLEMENTATION
#include "../../finetune.h"
#include "fuzz_common.h"

static ft_ctx *ctx;
static char path[1024];

static void cleanup(void) { ft_ctx_free(ctx); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    ctx = ft_fuzz_ctx();
    ft_fuzz_path(path, sizeof path, "model.gguf");
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ft_model *m;
    ft_model_opts o;
    const ft_model_config *c;
    int32_t ids[3];
    ft_batch b;
    ft_tensor *y;
    int i;
    ft_fuzz_write(path, data, size);
    memset(&o, 0, sizeof o);
    if (size & 1) o.quantize = FT_TYPE_NF4;
    if (ft_model_load(&m, path, &o) != FT_OK) return 0;
    c = ft_model_config_get(m);
    FT_FUZZ_CHECK(c->n_embd >= 1 && c->n_layer >= 1 && c->n_head >= 1 && c->n_head_kv >= 1 && c->n_ff >= 1);
    FT_FUZZ_CHECK(c->n_head % c->n_head_kv == 0 && c->n_vocab == ft_model_tok_embd(m)->shape[0]);
    ft_fuzz_sink += (unsigned)ft_model_linear_bytes(m, NULL);
    if (ft_model_chat_template(m)) ft_fuzz_sink += (unsigned)strlen(ft_model_chat_template(m));
    if (ft_model_tokenizer(m)) ft_fuzz_sink += (unsigned)ft_tokenizer_n_vocab(ft_model_tokenizer(m));
    if (c->n_vocab >= 1) {
        for (i = 0; i < 3; i++) ids[i] = (int32_t)((i * 7 + 1) % c->n_vocab);
        memset(&b, 0, sizeof b);
        b.B = 1;
        b.T = 3;
        b.ids = ids;
        ft_ctx_reset(ctx);
        ft_ctx_set_grad(ctx, 0);
        y = ft_model_forward(ctx, m, &b);
        if (y) FT_FUZZ_CHECK(y->shape[y->ndim - 1] == c->n_vocab);
        ft_ctx_reset(ctx);
    }
    ft_model_free(m);
    return 0;
}
