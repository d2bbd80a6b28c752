/* tiny_model.h - writes a tiny random llama-architecture GGUF for fast tests (no download).
   vocab 64, embd 32, 2 layers, 4 heads (2 KV heads, head dim 8), FFN 48, tied embeddings.
   `wtype` is the storage type of the 2-D weights (F32 or F16); norms are F32. */
#ifndef FT_TINY_MODEL_H
#define FT_TINY_MODEL_H

enum { TINY_V = 64, TINY_C = 32, TINY_L = 2, TINY_H = 4, TINY_HKV = 2, TINY_D = 8, TINY_F = 48 };
static int tiny_layers = TINY_L;    /* layers of the models written next (a test may set more) */

static void *tiny_fill(ft_type type, int64_t n, float scale, ft_rng *r, float offset) {
    int64_t i;
    if (type == FT_TYPE_F16) {
        uint16_t *p = (uint16_t *)malloc((size_t)n * 2);
        for (i = 0; i < n; i++) p[i] = ft_fp32_to_fp16(offset + scale * (2 * ft_rng_uniform(r) - 1));
        return p;
    } else {
        float *p = (float *)malloc((size_t)n * 4);
        for (i = 0; i < n; i++) p[i] = offset + scale * (2 * ft_rng_uniform(r) - 1);
        return p;
    }
}

/* returns 1 on success; every buffer is freed after the write. With `vocab_from` (a GGUF with a
   tokenizer, e.g. SmolLM2's), the tiny model takes its tokenizer, chat template and vocabulary
   size, so it can read real datasets. */
static int tiny_model_write_vocab(const char *path, ft_type wtype, uint64_t seed, const char *vocab_from) {
    ft_gguf_writer *w; ft_rng r; void *bufs[64]; int nb = 0, l, ok; int64_t V = TINY_V;
    char name[64]; ft_gguf *src = NULL;
    ft_rng_seed(&r, seed);
    if (tiny_layers < 1 || 2 + 9 * tiny_layers > 64) return 0;
    if (ft_gguf_writer_init(&w) != FT_OK) return 0;
    if (vocab_from) {
        int64_t i;
        if (ft_gguf_open(&src, vocab_from) != FT_OK) { ft_gguf_writer_free(w); return 0; }
        for (i = 0; i < ft_gguf_n_kv(src); i++) {
            const ft_gguf_kv *kv = ft_gguf_kv_at(src, i);
            if (kv->key.n > 10 && memcmp(kv->key.s, "tokenizer.", 10) == 0) ft_gguf_copy_kv(w, kv);
        }
        V = (int64_t)ft_gguf_find(src, "tokenizer.ggml.tokens")->n;
    }
    ft_gguf_set_str(w, "general.architecture", "llama");
    ft_gguf_set_str(w, "general.name", "tiny-test-llama");
    ft_gguf_set_int(w, "llama.context_length", FT_GGUF_UINT32, 256);
    ft_gguf_set_int(w, "llama.embedding_length", FT_GGUF_UINT32, TINY_C);
    ft_gguf_set_int(w, "llama.block_count", FT_GGUF_UINT32, (int64_t)tiny_layers);
    ft_gguf_set_int(w, "llama.feed_forward_length", FT_GGUF_UINT32, TINY_F);
    ft_gguf_set_int(w, "llama.attention.head_count", FT_GGUF_UINT32, TINY_H);
    ft_gguf_set_int(w, "llama.attention.head_count_kv", FT_GGUF_UINT32, TINY_HKV);
    ft_gguf_set_int(w, "llama.rope.dimension_count", FT_GGUF_UINT32, TINY_D);
    ft_gguf_set_float(w, "llama.rope.freq_base", FT_GGUF_FLOAT32, 10000.0);
    ft_gguf_set_float(w, "llama.attention.layer_norm_rms_epsilon", FT_GGUF_FLOAT32, 1e-5);
#define TINY_ADD(nm, type, n0, n1, scale, off) do {                                            \
        int64_t ne_[2]; ne_[0] = n0; ne_[1] = n1;                                               \
        bufs[nb] = tiny_fill(type, (int64_t)(n0) * ((n1) != 0 ? (n1) : 1), scale, &r, off);      \
        ft_gguf_add_tensor(w, nm, type, (n1) != 0 ? 2 : 1, ne_, bufs[nb]); nb++;                \
    } while (0)
    TINY_ADD("token_embd.weight", wtype, TINY_C, V, 1.0f, 0.0f);
    TINY_ADD("output_norm.weight", FT_TYPE_F32, TINY_C, 0, 0.2f, 1.0f);
    for (l = 0; l < tiny_layers; l++) {
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);   TINY_ADD(name, FT_TYPE_F32, TINY_C, 0, 0.2f, 1.0f);
        snprintf(name, sizeof name, "blk.%d.attn_q.weight", l);      TINY_ADD(name, wtype, TINY_C, TINY_H * TINY_D, 0.3f, 0.0f);
        snprintf(name, sizeof name, "blk.%d.attn_k.weight", l);      TINY_ADD(name, wtype, TINY_C, TINY_HKV * TINY_D, 0.3f, 0.0f);
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", l);      TINY_ADD(name, wtype, TINY_C, TINY_HKV * TINY_D, 0.3f, 0.0f);
        snprintf(name, sizeof name, "blk.%d.attn_output.weight", l); TINY_ADD(name, wtype, TINY_H * TINY_D, TINY_C, 0.3f, 0.0f);
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);    TINY_ADD(name, FT_TYPE_F32, TINY_C, 0, 0.2f, 1.0f);
        snprintf(name, sizeof name, "blk.%d.ffn_gate.weight", l);    TINY_ADD(name, wtype, TINY_C, TINY_F, 0.3f, 0.0f);
        snprintf(name, sizeof name, "blk.%d.ffn_up.weight", l);      TINY_ADD(name, wtype, TINY_C, TINY_F, 0.3f, 0.0f);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);    TINY_ADD(name, wtype, TINY_F, TINY_C, 0.3f, 0.0f);
    }
#undef TINY_ADD
    ok = ft_gguf_write(w, path) == FT_OK;
    ft_gguf_writer_free(w);
    ft_gguf_close(src);
    while (nb > 0) free(bufs[--nb]);
    return ok;
}
static inline int tiny_model_write(const char *path, ft_type wtype, uint64_t seed) { return tiny_model_write_vocab(path, wtype, seed, NULL); }

/* the 12 token ids the PEFT tests run the tiny model on, its logits and next-token loss there,
   and a fixed nudge of every parameter off its start value */
static const int32_t TINY_IDS[12] = {1, 5, 63, 7, 7, 0, 22, 41, 9, 3, 3, 17};
static inline void tiny_logits(ft_ctx *ctx, ft_model *m, float *out) {        /* out: 12 x TINY_V */
    ft_batch b; ft_tensor *y;
    memset(&b, 0, sizeof b); b.B = 1; b.T = 12; b.ids = TINY_IDS;
    ft_ctx_reset(ctx);
    y = ft_model_forward(ctx, m, &b);
    if (y) memcpy(out, y->data, 12 * TINY_V * 4); else memset(out, 0, 12 * TINY_V * 4);
}
static inline float tiny_loss(ft_ctx *ctx, ft_model *m, int grad) {            /* grad: and its backward */
    ft_batch b; ft_tensor *logits, *loss; int32_t tgt[12]; int i, old;
    for (i = 0; i < 11; i++) tgt[i] = TINY_IDS[i + 1];
    tgt[11] = -100;
    memset(&b, 0, sizeof b); b.B = 1; b.T = 12; b.ids = TINY_IDS;
    ft_ctx_reset(ctx);
    old = ft_ctx_set_grad(ctx, grad);
    logits = ft_model_forward(ctx, m, &b);
    loss = ft_cross_entropy(ctx, logits, tgt, -100);
    if (grad && ft_backward(ctx, loss) != FT_OK) printf("    backward: %s\n", ft_last_error());
    ft_ctx_set_grad(ctx, old);
    return loss ? ((float *)loss->data)[0] : NAN;
}
static inline void tiny_nudge(ft_params *P, float amp) {             /* move every parameter off its start */
    int i;
    for (i = 0; i < ft_params_count(P); i++) {
        ft_tensor *t = ft_params_get(P, i); int64_t j;
        for (j = 0; j < ft_numel(t); j++) ((float *)t->data)[j] += amp * sinf((float)(3 * j + 7 * i + 1));
    }
}
static inline double tiny_maxdiff(const float *a, const float *b, int n) {
    double w = 0; int i;
    for (i = 0; i < n; i++) w = fmax(w, fabs(a[i] - b[i]));
    return w;
}
#endif
