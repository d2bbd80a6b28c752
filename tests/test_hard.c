/* test_hard.c - hard inputs (issue 20): each defect an outside test found, and each place a
   non-finite value can enter, with its regression test. Float metadata read as integers
   (saturated, NaN 0); a finite score per token; a size query of ft_detokenize with no buffer;
   JSON numbers past the double range; adapter_config.json numbers out of range; NaN in an adapter
   file, in a checkpoint (0xFF bytes), in the base model's weights and in the options; --seq-len
   that leaves no target token; what the fuzzers found (tests/fuzz/regress). The regex engine's
   cases are in test_rl.c, the command line's (--log-every 0, --lr nan, ranges, resume's metrics,
   paths) in test_cli.c. */
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

static const char *MODEL = "build/hard_tiny.gguf", *VOCAB = "build/hard_vocab.gguf";

static int said(const char *s) { return strstr(ft_last_error(), s) != NULL; }

/* a whole file into memory, patched at byte offset `at` with n bytes of `byte`, written back */
static int patch_file(const char *path, size_t at, size_t n, int byte) {
    size_t size; unsigned char *b = ft_test_slurp(path, &size); FILE *f; int ok;
    if (!b || at + n > size) { free(b); return 0; }
    memset(b + at, byte, n);
    f = fopen(path, "wb");
    ok = f && fwrite(b, 1, size, f) == size;
    if (f) fclose(f);
    free(b);
    return ok;
}
/* the byte offset in the file of a GGUF tensor's data (its mapped pointer minus the file's start) */
static size_t tensor_offset(const char *path, const char *name) {
    size_t size, off = 0; unsigned char *b = ft_test_slurp(path, &size); ft_gguf *g;
    if (b && ft_gguf_open_memory(&g, b, size, path) == FT_OK) {
        const ft_gguf_tensor *t = ft_gguf_find_tensor(g, name);
        if (t) off = (size_t)((const unsigned char *)t->data - b);
        ft_gguf_close(g);
    }
    free(b);
    return off;
}

/* a SentencePiece vocabulary of four tokens; token_type and scores as given */
static int write_vocab(const char *path, ft_gguf_type type_elem, const void *types, const double *scores) {
    static const ft_gguf_str tokens[4] = {{"<unk>", 5}, {"<s>", 3}, {"</s>", 4}, {"\xe2\x96\x81" "a", 4}};
    ft_gguf_writer *w; int ok;
    if (ft_gguf_writer_init(&w) != FT_OK) return 0;
    ft_gguf_set_str(w, "tokenizer.ggml.model", "llama");
    ft_gguf_set_str_array(w, "tokenizer.ggml.tokens", tokens, 4);
    ft_gguf_set_array(w, "tokenizer.ggml.token_type", type_elem, types, 4);
    if (scores) ft_gguf_set_array(w, "tokenizer.ggml.scores", FT_GGUF_FLOAT64, scores, 4);
    ok = ft_gguf_write(w, path) == FT_OK;
    ft_gguf_writer_free(w);
    return ok;
}

/* defect 1: token_type as floats holding 1e30 (converted with no range check: undefined); a
   score past the float range; and the integer reading of float metadata */
TEST(float_metadata) {
    const float types[4] = {1e30f, 3.0f, NAN, 1.0f};
    const double fine[4] = {0, 0, 0, -1}, huge[4] = {0, 1e300, 0, 0};
    ft_gguf *g; ft_tokenizer *t = NULL; const ft_gguf_kv *kv;
    int32_t ids[8]; char buf[8];
    CHECK(write_vocab(VOCAB, FT_GGUF_FLOAT32, types, fine), "write %s", VOCAB);
    CHECK_OK(ft_gguf_open(&g, VOCAB));
    kv = ft_gguf_find(g, "tokenizer.ggml.token_type");
    CHECK(kv && ft_gguf_kv_int(kv, 0) == INT64_MAX && ft_gguf_kv_int(kv, 1) == 3 && ft_gguf_kv_int(kv, 2) == 0,
          "floats as integers: saturated, truncated, NaN 0");
    CHECK_OK(ft_tokenizer_from_gguf(&t, g));
    CHECK(t && ft_tokenize(t, "a", 1, ids, 8, 0, 0) >= 1, "the vocabulary with float token types loads and tokenizes");
    /* defect 2: a size query with no ids and no buffer (memcpy(NULL, ..., 0) before) */
    CHECK(t && ft_detokenize(t, NULL, 0, NULL, 0, 0) == 0, "ft_detokenize size query of nothing");
    CHECK(t && ft_detokenize(t, NULL, 0, buf, 8, 0) == 0 && buf[0] == 0, "ft_detokenize of nothing into a buffer");
    ft_tokenizer_free(t);
    ft_gguf_close(g);
    CHECK(write_vocab(VOCAB, FT_GGUF_FLOAT32, types, huge), "write %s", VOCAB);
    CHECK_OK(ft_gguf_open(&g, VOCAB));
    CHECK(ft_tokenizer_from_gguf(&t, g) == FT_ERR_FORMAT && said(VOCAB) && said("scores[1]"), "a score past the float range: %s", ft_last_error());
    ft_gguf_close(g);
}

/* JSON numbers are finite doubles: 1e999 is an error at its line, not infinity */
TEST(json_range) {
    ft_json_doc *d = NULL;
    const char *big = "{\"a\": 1e999}", *ok = "{\"a\": 1e308, \"b\": -1e-400}";
    CHECK(ft_json_parse(&d, big, strlen(big), "x.jsonl", 7) == FT_ERR_FORMAT && said("x.jsonl") && said("7") && said("out of range"),
          "1e999: %s", ft_last_error());
    CHECK(ft_json_parse(&d, "\"\\u000g\"", 8, "x.jsonl", 1) == FT_ERR_FORMAT && said("hex digit"), "a \\u escape with a bad last digit: %s", ft_last_error());
    CHECK_OK(ft_json_parse(&d, ok, strlen(ok), "x.jsonl", 1));
    CHECK(d && ft_json_get(ft_json_root(d), "a")->num == 1e308, "1e308 is read");
    ft_json_free(d);
}

/* a LoRA adapter of the tiny model saved in PEFT's format into dir */
static int save_lora(ft_model *m, const char *dir, float poison) {
    ft_peft *p; ft_lora_opts lo; ft_result r;
    memset(&lo, 0, sizeof lo); lo.r = 4; lo.alpha = 8;
    if (ft_lora_attach(&p, m, &lo) != FT_OK) return 0;
    tiny_nudge(ft_peft_params(p), 0.1f);
    if (poison != 0) ((float *)ft_params_get(ft_peft_params(p), 1)->data)[3] = poison;
    r = ft_peft_save(p, dir, FT_FORMAT_PEFT, NULL);
    ft_peft_free(p);
    return r == FT_OK;
}
static void set_config(const char *dir, const char *from, const char *to) {
    char path[256]; size_t n; char *s, *at; FILE *f;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    s = (char *)ft_test_slurp(path, &n);
    at = s ? strstr(s, from) : NULL;
    f = at ? fopen(path, "wb") : NULL;
    if (f) { fwrite(s, 1, (size_t)(at - s), f); fputs(to, f); fputs(at + strlen(from), f); fclose(f); }
    CHECK(f != NULL, "%s holds %s", path, from);
    free(s);
}

/* defect 8 and non-finite adapters: r and lora_alpha out of range are errors naming the key; a
   NaN is neither written nor read */
TEST(adapter_values) {
    ft_model *m; ft_peft *p = NULL; size_t size; unsigned char *b; uint64_t hn;
    const char *dir = "build/hard_lora";
    CHECK_OK(ft_model_load(&m, MODEL, NULL));
    CHECK(save_lora(m, dir, 0), "a LoRA adapter in PEFT's format");
    CHECK_OK(ft_peft_load(&p, m, dir));
    ft_peft_free(p);
    set_config(dir, "\"r\": 4", "\"r\": 1e300");
    CHECK(ft_peft_load(&p, m, dir) == FT_ERR_FORMAT && !p && said("adapter_config.json") && said("\"r\""), "r 1e300: %s", ft_last_error());
    set_config(dir, "\"r\": 1e300", "\"r\": 4");
    set_config(dir, "\"lora_alpha\": 8", "\"lora_alpha\": 1e300");
    CHECK(ft_peft_load(&p, m, dir) == FT_ERR_FORMAT && said("lora_alpha"), "lora_alpha 1e300: %s", ft_last_error());
    set_config(dir, "\"lora_alpha\": 1e300", "\"lora_alpha\": 8");
    b = ft_test_slurp("build/hard_lora/adapter_model.safetensors", &size);      /* the first value of the data: NaN */
    CHECK(b && size > 16, "the safetensors file");
    if (b) {
        memcpy(&hn, b, 8);
        free(b);
        CHECK(patch_file("build/hard_lora/adapter_model.safetensors", 8 + (size_t)hn, 4, 0xFF), "patch");
        CHECK(ft_peft_load(&p, m, dir) == FT_ERR_NUMERIC && !p && said("adapter_model.safetensors") && said("nan"), "a NaN in the adapter: %s", ft_last_error());
    }
    CHECK(!save_lora(m, "build/hard_lora_nan", NAN) && said("not written") && said("nan"), "a NaN adapter is not written: %s", ft_last_error());
    ft_model_free(m);
}

/* what the fuzzers found (tests/fuzz/regress): an own-format adapter naming an unknown method
   (its message read the unmapped file), and one whose prefix_hidden of 2^24 made the loader
   allocate 5 GB; a model whose block_count of 2^24 made it allocate 19 GB before any tensor */
static void own_adapter(const char *path, const char *method, int64_t prefix_hidden) {
    ft_gguf_writer *w; float x[8] = {0}; int64_t ne[2] = {8, 1};
    ft_gguf_writer_init(&w);
    ft_gguf_set_str(w, "general.type", "adapter");
    ft_gguf_set_str(w, "adapter.type", "finetune");
    ft_gguf_set_str(w, "finetune.peft.method", method);
    ft_gguf_set_int(w, "finetune.peft.n_virtual", FT_GGUF_INT32, 8);
    ft_gguf_set_int(w, "finetune.peft.prefix_hidden", FT_GGUF_INT32, prefix_hidden);
    ft_gguf_add_tensor(w, "prefix.table", FT_TYPE_F32, 2, ne, x);
    CHECK_OK(ft_gguf_write(w, path));
    ft_gguf_writer_free(w);
}
TEST(fuzz_findings) {
    ft_model *m; ft_peft *p = NULL; ft_gguf_writer *w; int64_t ne[1] = {4}; float x[4] = {0};
    CHECK_OK(ft_model_load(&m, MODEL, NULL));
    own_adapter("build/hard_own.gguf", "no-such-method", 0);
    CHECK(ft_peft_load(&p, m, "build/hard_own.gguf") == FT_ERR_FORMAT && said("unknown method 'no-such-method'"), "unknown method: %s", ft_last_error());
    own_adapter("build/hard_own.gguf", "prefix", 16777216);
    CHECK(ft_peft_load(&p, m, "build/hard_own.gguf") == FT_ERR_FORMAT && said("prefix_hidden is 16777216"), "prefix_hidden 2^24: %s", ft_last_error());
    ft_model_free(m);
    ft_gguf_writer_init(&w);
    ft_gguf_set_str(w, "general.architecture", "llama");
    ft_gguf_set_int(w, "llama.block_count", FT_GGUF_UINT32, 16777216);
    ft_gguf_set_int(w, "llama.embedding_length", FT_GGUF_UINT32, 4);
    ft_gguf_set_int(w, "llama.feed_forward_length", FT_GGUF_UINT32, 4);
    ft_gguf_set_int(w, "llama.attention.head_count", FT_GGUF_UINT32, 2);
    ft_gguf_add_tensor(w, "token_embd.weight", FT_TYPE_F32, 1, ne, x);
    CHECK_OK(ft_gguf_write(w, "build/hard_layers.gguf"));
    ft_gguf_writer_free(w);
    CHECK(ft_model_load(&m, "build/hard_layers.gguf", NULL) == FT_ERR_FORMAT && said("block_count 16777216"), "block_count 2^24: %s", ft_last_error());
}

/* NF4 at load of a model with extreme (finite) weights, as the model fuzzer found: the block
   scales' mean overflowing (two blocks of 3e38) is an error; subnormal scales whose spread
   inverts to infinity give codes, not a NaN converted to an integer (undefined) */
TEST(nf4_extremes) {
    static float x[192]; uint8_t packed[96], qa[3]; float a2[1], off;
    int i;
    for (i = 0; i < 128; i++) x[i] = 3e38f;
    CHECK(ft_quantize_nf4(x, 128, packed, qa, a2, &off) == FT_ERR_NUMERIC && said("overflows"), "3e38: %s", ft_last_error());
    memset(x, 0, sizeof x);
    x[64] = 2e-40f;
    x[128] = 1e-40f;
    CHECK_OK(ft_quantize_nf4(x, 192, packed, qa, a2, &off));
}

/* a short LoRA SFT run of the tiny model on given examples */
static ft_result train(const char *model, ft_dataset *d, int64_t steps, int64_t seq_len, float lr, const char *save, const char *resume) {
    ft_model *m; ft_peft *p; ft_ctx *ctx; ft_lora_opts lo; ft_train_opts to; ft_ctx_opts co; ft_result r;
    if ((r = ft_model_load(&m, model, NULL)) != FT_OK) return r;
    memset(&co, 0, sizeof co); co.n_threads = 1; co.seed = 3;
    ft_ctx_init(&ctx, &co);
    memset(&lo, 0, sizeof lo); lo.r = 4; lo.alpha = 8;
    ft_lora_attach(&p, m, &lo);
    to = ft_train_opts_default(FT_OBJ_SFT);
    to.steps = steps; to.batch = 2; to.seq_len = seq_len; to.lr = lr;
    if (save) { to.checkpoint_path = save; to.save_every = 1; }
    to.resume_from = resume;
    r = ft_train(ctx, m, ft_peft_params(p), d, &to, NULL);
    ft_peft_free(p); ft_ctx_free(ctx); ft_model_free(m);
    return r;
}
/* four examples of 12 tokens; the answer (the targets) is tokens 8..11 */
static ft_dataset *examples(void) {
    ft_dataset *d = NULL; ft_example e; int32_t ids[12]; unsigned char loss[12]; int i, t;
    ft_dataset_new(&d, FT_DATA_INSTRUCT);
    for (i = 0; i < 4 && d; i++) {
        for (t = 0; t < 12; t++) { ids[t] = (int32_t)((i * 11 + t * 5 + 1) % TINY_V); loss[t] = t >= 8; }
        memset(&e, 0, sizeof e);
        e.ids = ids; e.loss = loss; e.n = 12; e.prompt_len = 8;
        ft_dataset_add(d, &e);
    }
    return d;
}

/* defect 9: a seq_len that cuts every answer away is refused; counted per example */
TEST(no_target_left) {
    ft_dataset *d = examples();
    CHECK(ft_dataset_without_targets(d, 8) == 4 && ft_dataset_without_targets(d, 9) == 0, "the target at t = 8 needs 9 tokens");
    CHECK(train(MODEL, d, 1, 8, 1e-3f, NULL, NULL) == FT_ERR_INVALID && said("no example keeps a target token") && said("seq_len 8"),
          "seq_len 8: %s", ft_last_error());
    CHECK_OK(train(MODEL, d, 1, 9, 1e-3f, NULL, NULL));
    ft_dataset_free(d);
}

/* defect 6 in the library: a NaN or negative rate is refused before anything trains */
TEST(options) {
    ft_dataset *d = examples();
    CHECK(train(MODEL, d, 1, 16, NAN, NULL, NULL) == FT_ERR_INVALID && said("lr") && said("not finite"), "lr NaN: %s", ft_last_error());
    CHECK(train(MODEL, d, 1, 16, -1, NULL, NULL) == FT_ERR_INVALID && said("lr"), "lr -1: %s", ft_last_error());
    ft_dataset_free(d);
}

/* defect 11: 0xFF bytes in a checkpoint's data (NaN) are an error naming the tensor, not values */
TEST(damaged_checkpoint) {
    ft_dataset *d = examples();
    const char *ckpt = "build/hard_ckpt.gguf";
    size_t at;
    CHECK_OK(train(MODEL, d, 2, 16, 1e-3f, ckpt, NULL));
    CHECK_OK(train(MODEL, d, 3, 16, 1e-3f, NULL, ckpt));
    at = tensor_offset(ckpt, "adam.v.layers.1.down_proj.lora_B");
    CHECK(at > 0 && patch_file(ckpt, at + 8, 16, 0xFF), "patch %s at %zu", ckpt, at);
    CHECK(train(MODEL, d, 3, 16, 1e-3f, NULL, ckpt) == FT_ERR_NUMERIC && said(ckpt) && said("adam.v.layers.1.down_proj.lora_B[2]") && said("damaged"),
          "resume from the damaged checkpoint: %s", ft_last_error());
    ft_dataset_free(d);
}

/* a NaN in the base model's weights stops training before the first step, naming the tensor */
TEST(nonfinite_weights) {
    ft_dataset *d = examples();
    const char *bad = "build/hard_nan.gguf";
    size_t at;
    CHECK(tiny_model_write(bad, FT_TYPE_F16, 5), "write %s", bad);
    at = tensor_offset(bad, "blk.1.ffn_up.weight");
    CHECK(at > 0 && patch_file(bad, at + 20, 2, 0xFF), "patch %s", bad);     /* an f16 NaN */
    CHECK(train(bad, d, 1, 16, 1e-3f, NULL, NULL) == FT_ERR_NUMERIC && said(bad) && said("blk.1.ffn_up.weight") && said("element 10"),
          "NaN weight: %s", ft_last_error());
    ft_dataset_free(d);
}

int main(void) {
    if (!tiny_model_write(MODEL, FT_TYPE_F32, 9)) { printf("FAIL - cannot write %s\n", MODEL); return 1; }
    RUN(float_metadata);
    RUN(json_range);
    RUN(adapter_values);
    RUN(fuzz_findings);
    RUN(nf4_extremes);
    RUN(no_target_left);
    RUN(options);
    RUN(damaged_checkpoint);
    RUN(nonfinite_weights);
    return ft_test_summary("test_hard");
}
