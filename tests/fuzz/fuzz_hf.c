/* fuzz_hf.c - libFuzzer harness of the Hugging Face directory reader ([hf]: ft_gguf_open and
   ft_model_load on a directory) and of its writer (ft_gguf_save_hf). The input becomes a
   directory in this process's temporary directory:
      byte 0                  bits 0-3: k, one of the tiny models of tests/fixtures/hf (k % 9);
                              bit 6: write what was read back as a Hugging Face directory;
                              bit 7: model.safetensors comes from the input, not from model k
      bytes 1-2, then that many   config.json (little-endian length)
      2 bytes, then that many     tokenizer.json (length 0: none)
      the rest                    model.safetensors (bit 7)
   What opens is used: the tokenizer tokenizes a fixed text, a model that loads runs 2 tokens.
   Asserts: no memory error, no undefined behaviour, no leak (the reader's errors are results). */
#define _POSIX_C_SOURCE 200809L
#define FINETUNE_IMPLEMENTATION
#include "../../finetune.h"
#include "fuzz_common.h"

static const char *const NAMES[9] = {"llama3", "llama_linear", "llama_yarn", "qwen3", "gemma3", "phi3", "phi3_longrope", "qwen3moe", "olmoe"};
static unsigned char *weights[9];
static size_t weights_n[9];
static char dir[1024], out[1024], cfg[1200], tok[1200], st[1200];
static ft_ctx *ctx;

static void cleanup(void) {
    int k;
    for (k = 0; k < 9; k++) free(weights[k]);
    ft_ctx_free(ctx);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    char path[256];
    int k;
    (void)argc;
    (void)argv;
    for (k = 0; k < 9; k++) {
        snprintf(path, sizeof path, "tests/fixtures/hf/%s/model.safetensors", NAMES[k]);
        FT_FUZZ_MUST((weights[k] = ft_fuzz_slurp(path, &weights_n[k])) != NULL);
    }
    ctx = ft_fuzz_ctx();
    ft_ctx_set_grad(ctx, 0);
    ft_fuzz_path(dir, sizeof dir, "model");
    ft_fuzz_path(out, sizeof out, "written");
    FT_FUZZ_MUST(ft_mkdirs(dir) == FT_OK);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(tok, sizeof tok, "%s/tokenizer.json", dir);
    snprintf(st, sizeof st, "%s/model.safetensors", dir);
    atexit(cleanup);
    return 0;
}

/* the tokenizer and the model of what opened, used */
static void use(const ft_gguf *g) {
    ft_tokenizer *t = NULL;
    ft_model *m = NULL;
    int32_t ids[64];
    if (ft_tokenizer_from_gguf(&t, g) == FT_OK && t) {
        int64_t n = ft_tokenize(t, "Hello world 123, <|im_end|> caf\xc3\xa9", -1, ids, 64, 1, 1);
        ft_fuzz_touch(ids, (size_t)(n > 0 ? (n < 64 ? n : 64) : 0) * sizeof(int32_t));
    }
    ft_tokenizer_free(t);
    if (ft_model_load(&m, dir, NULL) == FT_OK) {
        static const int32_t two[2] = {0, 1};
        ft_batch b;
        ft_tensor *y;
        memset(&b, 0, sizeof b);
        b.B = 1;
        b.T = ft_model_config_get(m)->n_vocab > 1 ? 2 : 1;
        b.ids = two;
        ft_ctx_reset(ctx);
        y = ft_model_forward(ctx, m, &b);
        if (y) ft_fuzz_touch(y->data, sizeof(float));
    }
    ft_model_free(m);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    size_t nc, nt, off;
    int k, own_weights, write_back;
    ft_gguf *g = NULL;
    if (size < 5) return 0;
    k = (data[0] & 15) % 9;
    write_back = (data[0] >> 6) & 1;
    own_weights = data[0] >> 7;
    nc = (size_t)data[1] | (size_t)data[2] << 8;
    if (nc > size - 3) return 0;
    ft_fuzz_write(cfg, data + 3, nc);
    off = 3 + nc;
    if (off + 2 > size) return 0;
    nt = (size_t)data[off] | (size_t)data[off + 1] << 8;
    off += 2;
    if (nt > size - off) return 0;
    if (nt) ft_fuzz_write(tok, data + off, nt);
    else remove(tok);
    off += nt;
    if (own_weights) ft_fuzz_write(st, data + off, size - off);
    else ft_fuzz_write(st, weights[k], weights_n[k]);
    if (ft_gguf_open(&g, dir) == FT_OK) {
        use(g);
        if (write_back) (void)ft_gguf_save_hf(g, out, FT_TYPE_F16);
        ft_gguf_close(g);
    }
    return 0;
}
