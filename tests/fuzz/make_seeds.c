/* make_seeds.c - writes the seed corpora of the fuzz harnesses, tests/fuzz/corpus/<target>/: GGUF
   files of the fuzz tokenizers, of a few tensor types and of micro models; adapters and a training
   checkpoint of tests/tiny_model.h's model (as the peft and checkpoint harnesses set it up);
   safetensors, JSON and JSONL from those and from the first lines of examples/data; texts, chat
   conversations and regular expressions. Each input carries the header bytes its harness reads
   (see each fuzz_<target>.c). Fixed seeds: every run writes the same bytes.
      make fuzz-seeds        (or: build/fuzz/make_seeds [OUT_DIR], from the repository root)
   It checks that each target's corpus stays under 64 KiB. */
#define _POSIX_C_SOURCE 200809L
#define FINETUNE_IMPLEMENTATION
#include "../../finetune.h"
#include "fuzz_common.h"

static const char *OUT = "tests/fuzz/corpus";
static long corpus_bytes[16];
static const char *const TARGETS[] = {"gguf", "safetensors", "json", "dataset", "tokenizer", "chat", "regex",
                                      "peft", "checkpoint", "model", "hf", NULL};

static int target_index(const char *target) {
    int i;
    for (i = 0; TARGETS[i]; i++) if (strcmp(TARGETS[i], target) == 0) return i;
    fprintf(stderr, "make_seeds: unknown target %s\n", target);
    exit(1);
}

/* OUT/target/name = data[0..n) */
static void seed(const char *target, const char *name, const void *data, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", OUT, target, name);
    FT_FUZZ_MUST(ft_mkdirs_parent(path) == FT_OK);
    ft_fuzz_write(path, data, n);
    corpus_bytes[target_index(target)] += (long)n;
}
/* OUT/target/name = header[0..nh) + data[0..n) */
static void seed2(const char *target, const char *name, const void *header, size_t nh, const void *data, size_t n) {
    unsigned char *b = (unsigned char *)malloc(nh + n + 1);
    FT_FUZZ_MUST(b != NULL);
    memcpy(b, header, nh);
    if (n) memcpy(b + nh, data, n);
    seed(target, name, b, nh + n);
    free(b);
}
/* a file written by the library at a scratch path, moved into the corpus */
static void seed_file(const char *target, const char *name, const char *scratch) {
    size_t n;
    unsigned char *b = ft_fuzz_slurp(scratch, &n);
    FT_FUZZ_MUST(b != NULL);
    seed(target, name, b, n);
    free(b);
    remove(scratch);
}
/* the first k lines of a file (with their newlines) */
static char *first_lines(const char *path, int k, size_t *n) {
    size_t all, i;
    unsigned char *b = ft_fuzz_slurp(path, &all);
    FT_FUZZ_MUST(b != NULL);
    for (i = 0; i < all && k > 0; i++) if (b[i] == '\n') k--;
    b[i] = 0;
    *n = i;
    return (char *)b;
}

/* ---- gguf ------------------------------------------------------------------------------------ */
static void seeds_gguf(void) {
    char path[1024];
    ft_gguf_writer *w;
    static unsigned char zeros[4096];
    static const ft_type types[] = {FT_TYPE_F32, FT_TYPE_F16, FT_TYPE_BF16, FT_TYPE_Q4_0, FT_TYPE_Q4_1, FT_TYPE_Q5_0,
                                    FT_TYPE_Q5_1, FT_TYPE_Q8_0, FT_TYPE_Q2_K, FT_TYPE_Q3_K, FT_TYPE_Q4_K, FT_TYPE_Q5_K,
                                    FT_TYPE_Q6_K, FT_TYPE_IQ4_NL, FT_TYPE_I8, FT_TYPE_I32};
    int i;
    ft_fuzz_path(path, sizeof path, "seed.gguf");
    ft_fuzz_tokenizer_gguf(path, FT_FUZZ_TOK_SMOLLM);
    seed_file("gguf", "tokenizer_bpe_smollm", path);
    ft_fuzz_tokenizer_gguf(path, FT_FUZZ_TOK_LLAMA3);
    seed_file("gguf", "tokenizer_bpe_llama3", path);
    ft_fuzz_tokenizer_gguf(path, FT_FUZZ_TOK_SPM);
    seed_file("gguf", "tokenizer_spm", path);
    /* one key of every type, arrays of each, and one tensor of each storage type the loader decodes */
    FT_FUZZ_MUST(ft_gguf_writer_init(&w) == FT_OK);
    ft_gguf_set_int(w, "general.alignment", FT_GGUF_UINT32, 64);
    ft_gguf_set_str(w, "general.name", "every type");
    ft_gguf_set_int(w, "t.u8", FT_GGUF_UINT8, 200);
    ft_gguf_set_int(w, "t.i8", FT_GGUF_INT8, -100);
    ft_gguf_set_int(w, "t.u16", FT_GGUF_UINT16, 60000);
    ft_gguf_set_int(w, "t.i16", FT_GGUF_INT16, -30000);
    ft_gguf_set_int(w, "t.u32", FT_GGUF_UINT32, 4000000000LL);
    ft_gguf_set_int(w, "t.i32", FT_GGUF_INT32, -2000000000LL);
    ft_gguf_set_int(w, "t.u64", FT_GGUF_UINT64, 1LL << 40);
    ft_gguf_set_int(w, "t.i64", FT_GGUF_INT64, -(1LL << 40));
    ft_gguf_set_int(w, "t.bool", FT_GGUF_BOOL, 1);
    ft_gguf_set_float(w, "t.f32", FT_GGUF_FLOAT32, 0.5);
    ft_gguf_set_float(w, "t.f64", FT_GGUF_FLOAT64, -1e300);
    {
        int32_t ai[3] = {-1, 0, 7};
        float af[3] = {1.5f, -2.0f, 1e30f};
        double ad[2] = {3.25, -0.0};
        uint8_t ab[4] = {0, 1, 1, 0};
        ft_gguf_str as[3] = {{"", 0}, {"one", 3}, {"two words", 9}};
        ft_gguf_set_array(w, "a.i32", FT_GGUF_INT32, ai, 3);
        ft_gguf_set_array(w, "a.f32", FT_GGUF_FLOAT32, af, 3);
        ft_gguf_set_array(w, "a.f64", FT_GGUF_FLOAT64, ad, 2);
        ft_gguf_set_array(w, "a.bool", FT_GGUF_BOOL, ab, 4);
        ft_gguf_set_array(w, "a.empty", FT_GGUF_UINT16, ai, 0);
        ft_gguf_set_str_array(w, "a.str", as, 3);
    }
    for (i = 0; i < (int)(sizeof types / sizeof types[0]); i++) {
        char name[64];
        int64_t ne[2];
        int blk = ft_type_block(types[i]);
        ne[0] = blk > 1 ? blk : 8;
        ne[1] = i % 3 == 0 ? 2 : 1;
        snprintf(name, sizeof name, "t%d.%s", i, ft_type_name(types[i]));
        FT_FUZZ_MUST(ft_type_row_bytes(types[i], ne[0]) * (size_t)ne[1] <= sizeof zeros);
        FT_FUZZ_MUST(ft_gguf_add_tensor(w, name, types[i], ne[1] > 1 ? 2 : 1, ne, zeros) == FT_OK);
    }
    {
        int64_t ne[3] = {4, 0, 3};                 /* an empty tensor */
        ft_gguf_add_tensor(w, "empty", FT_TYPE_F32, 3, ne, zeros);
    }
    FT_FUZZ_MUST(ft_gguf_write(w, path) == FT_OK);
    ft_gguf_writer_free(w);
    seed_file("gguf", "every_type", path);
}

/* ---- model: micro llama / qwen2 models and an NF4 one ----------------------------------------- */
static void micro_model(const char *path, const char *arch, ft_type wtype, int tokenizer) {
    enum { V = 16, C = 16, L = 1, H = 2, HKV = 1, D = 8, F = 32 };
    ft_gguf_writer *w;
    ft_rng r;
    void *bufs[32];
    int nb = 0, l;
    char key[96], name[64];
    int qwen = strcmp(arch, "qwen2") == 0;
    ft_rng_seed(&r, 11);
    FT_FUZZ_MUST(ft_gguf_writer_init(&w) == FT_OK);
    ft_gguf_set_str(w, "general.architecture", arch);
    ft_gguf_set_str(w, "general.name", "micro");
#define MICRO_KEY(suffix, v) do {                                                       \
        snprintf(key, sizeof key, "%s.%s", arch, suffix);                               \
        ft_gguf_set_int(w, key, FT_GGUF_UINT32, v);                                     \
    } while (0)
    MICRO_KEY("context_length", 32);
    MICRO_KEY("embedding_length", C);
    MICRO_KEY("block_count", L);
    MICRO_KEY("feed_forward_length", F);
    MICRO_KEY("attention.head_count", H);
    MICRO_KEY("attention.head_count_kv", HKV);
    MICRO_KEY("rope.dimension_count", D);
#undef MICRO_KEY
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    ft_gguf_set_float(w, key, FT_GGUF_FLOAT32, 1e-6);
    if (tokenizer) ft_fuzz_tokenizer_keys(w, FT_FUZZ_TOK_SPM);
#define MICRO_ADD(nm, type, n0, n1, scale, off) do {                                    \
        int64_t ne_[2];                                                                 \
        ne_[0] = n0;                                                                    \
        ne_[1] = n1;                                                                    \
        bufs[nb] = tiny_fill(type, (int64_t)(n0) * ((n1) ? (n1) : 1), scale, &r, off);  \
        ft_gguf_add_tensor(w, nm, type, (n1) ? 2 : 1, ne_, bufs[nb]);                   \
        nb++;                                                                           \
    } while (0)
    {
        int64_t vocab = tokenizer ? 0 : V;
        if (tokenizer) {                           /* the vocabulary of the tokenizer's keys */
            ft_gguf *g;
            char tp[1024];
            ft_fuzz_path(tp, sizeof tp, "micro_vocab.gguf");
            ft_fuzz_tokenizer_gguf(tp, FT_FUZZ_TOK_SPM);
            FT_FUZZ_MUST(ft_gguf_open(&g, tp) == FT_OK);
            vocab = (int64_t)ft_gguf_find(g, "tokenizer.ggml.tokens")->n;
            ft_gguf_close(g);
            remove(tp);
        }
        MICRO_ADD("token_embd.weight", wtype, C, vocab, 1.0f, 0.0f);
        MICRO_ADD("output_norm.weight", FT_TYPE_F32, C, 0, 0.2f, 1.0f);
        if (qwen) MICRO_ADD("output.weight", wtype, C, vocab, 0.5f, 0.0f);
    }
    for (l = 0; l < L; l++) {
#define MICRO_W(suffix, type, n0, n1, scale, off) do {                                  \
        snprintf(name, sizeof name, "blk.%d.%s", l, suffix);                            \
        MICRO_ADD(name, type, n0, n1, scale, off);                                      \
    } while (0)
        MICRO_W("attn_norm.weight", FT_TYPE_F32, C, 0, 0.2f, 1.0f);
        MICRO_W("attn_q.weight", wtype, C, H * D, 0.3f, 0.0f);
        MICRO_W("attn_k.weight", wtype, C, HKV * D, 0.3f, 0.0f);
        MICRO_W("attn_v.weight", wtype, C, HKV * D, 0.3f, 0.0f);
        MICRO_W("attn_output.weight", wtype, H * D, C, 0.3f, 0.0f);
        if (qwen) {
            MICRO_W("attn_q.bias", FT_TYPE_F32, H * D, 0, 0.1f, 0.0f);
            MICRO_W("attn_k.bias", FT_TYPE_F32, HKV * D, 0, 0.1f, 0.0f);
            MICRO_W("attn_v.bias", FT_TYPE_F32, HKV * D, 0, 0.1f, 0.0f);
        }
        MICRO_W("ffn_norm.weight", FT_TYPE_F16, C, 0, 0.2f, 1.0f);
        MICRO_W("ffn_gate.weight", wtype, C, F, 0.3f, 0.0f);
        MICRO_W("ffn_up.weight", wtype, C, F, 0.3f, 0.0f);
        MICRO_W("ffn_down.weight", wtype, F, C, 0.3f, 0.0f);
#undef MICRO_W
    }
#undef MICRO_ADD
    FT_FUZZ_MUST(ft_gguf_write(w, path) == FT_OK);
    ft_gguf_writer_free(w);
    while (nb > 0) free(bufs[--nb]);
}
static void seeds_model(void) {
    char path[1024], nf4[1024];
    ft_model *m;
    ft_model_opts o;
    ft_fuzz_path(path, sizeof path, "micro.gguf");
    ft_fuzz_path(nf4, sizeof nf4, "micro_nf4.gguf");
    micro_model(path, "llama", FT_TYPE_F16, 0);
    memset(&o, 0, sizeof o);
    o.quantize = FT_TYPE_NF4;
    FT_FUZZ_MUST(ft_model_load(&m, path, &o) == FT_OK);
    FT_FUZZ_MUST(ft_model_save_gguf(m, nf4) == FT_OK);
    ft_model_free(m);
    seed_file("model", "llama_f16", path);
    seed_file("model", "llama_nf4", nf4);
    micro_model(path, "qwen2", FT_TYPE_F32, 0);
    seed_file("model", "qwen2_f32", path);
}

/* ---- safetensors and json --------------------------------------------------------------------- */
static void seeds_safetensors_json(void) {
    static const char hdr[] =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"a\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
        "\"b\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[12,14]},"
        "\"c\":{\"dtype\":\"I64\",\"shape\":[0,5],\"data_offsets\":[14,14]},"
        "\"d\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[14,17]},"
        "\"e\":{\"dtype\":\"BOOL\",\"shape\":[1,1,1],\"data_offsets\":[17,18]},"
        "\"f\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[18,26]}}";
    static const char json_misc[] =
        "{\"s\": \"esc \\\" \\\\ \\/ \\b\\f\\n\\r\\t \\u00e9 \\ud83d\\ude00 caf\xc3\xa9\", \"n\": [0, -0.5, 1e-7, 2E+300, -12],"
        " \"b\": [true, false, null], \"o\": {\"x\": [[[]]], \"y\": {}}, \"dup\": 1, \"dup\": 2}";
    unsigned char st[512];
    uint64_t hn = sizeof hdr - 1;
    size_t i, n;
    char *lines;
    memcpy(st, &hn, 8);
    memcpy(st + 8, hdr, (size_t)hn);
    for (i = 0; i < 26; i++) st[8 + hn + i] = (unsigned char)(i * 37 + 1);
    seed("safetensors", "every_dtype", st, 8 + (size_t)hn + 26);
    seed("json", "safetensors_header", hdr, sizeof hdr - 1);
    seed("json", "escapes_numbers", json_misc, sizeof json_misc - 1);
    lines = first_lines("examples/data/dates_pref_train.jsonl", 1, &n);
    seed("json", "preference_line", lines, n);
    free(lines);
    lines = first_lines("examples/data/seed_tasks.jsonl", 1, &n);
    seed("json", "instruction_line", lines, n);
    free(lines);
}

/* ---- dataset, tokenizer, chat, regex ------------------------------------------------------------ */
static void seeds_text(void) {
    /* dataset: header (format and options; tokenizer and template) + the first lines of a file */
    static const struct { const char *name, *file; unsigned char b0, b1; } ds[] = {
        {"text", "examples/data/general_train.jsonl", 1, 0},
        {"instruct", "examples/data/dates_train.jsonl", 2 | 16, 2},
        {"instruct_spm_system", "examples/data/units_train.jsonl", 2 | 128, 1 | 4},
        {"preference", "examples/data/dates_pref_train.jsonl", 4, 0},
        {"kto", "examples/data/dates_kto_train.jsonl", 5, 2 | 1},
        {"prompt", "examples/data/arith_train.jsonl", 6, 6},
        {"auto_skip_bad_max_len", "examples/data/seed_tasks.jsonl", 0 | 8 | 32, 0},
        {NULL, NULL, 0, 0}};
    static const char chat_lines[] =
        "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hello world\"},"
        " {\"role\": \"assistant\", \"content\": \"Hello, the test.\"}]}\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"12 and 12?\"}, {\"role\": \"assistant\", \"content\": \"24\"},"
        " {\"role\": \"user\", \"content\": \"and on?\"}, {\"role\": \"assistant\", \"content\": \"on and on\"}]}\n";
    static const char pref_lines[] =
        "{\"prompt\": [{\"role\": \"user\", \"content\": \"pick\"}], \"chosen\": [{\"role\": \"assistant\", \"content\": \"this\"}],"
        " \"rejected\": \"that\"}\n"
        "{\"prompt\": \"Hello\", \"chosen\": \"world\", \"rejected\": [{\"role\": \"assistant\", \"content\": \"\"}]}\n";
    static const struct { unsigned char b0; const char *text; } tok[] = {
        {FT_FUZZ_TOK_SMOLLM, "Hello world, the test and 12 tests.\n\n  indented\tline"},
        {FT_FUZZ_TOK_SMOLLM | 16, "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n<tool_call>{}"},
        {FT_FUZZ_TOK_GPT2 | 8 | 32, "I'm sure you're right: we've seen it's 3.14159 and -42!"},
        {FT_FUZZ_TOK_LLAMA3, "Gr\xc3\xbc\xc3\x9f" "e \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x99\x82 caf\xc3\xa9 1234567"},
        {FT_FUZZ_TOK_QWEN2, "int main(void) { return 0; }   // x\r\n\r\n"},
        {FT_FUZZ_TOK_DEFAULT | 16 | 32, "   \n\n\t  x  <|endoftext|>  "},
        {FT_FUZZ_TOK_SPM | 8, "Hello world, the test and 12 tests."},
        {FT_FUZZ_TOK_SPM | 16 | 32, "<s>on and on</s> \xe2\x96\x81 \xff\xfe" " bytes"},
        {0, NULL}};
    static const char *const regex[] = {
        "\\d+", "abc 123 def",
        "^[A-Z][a-z]+$", "Hello",
        "(cat|dog)s?", "hotdogs",
        "a{2,3}b", "caaab",
        "[^\\s]+@\\w+\\.com", "mail me@example.com",
        "\\d{2}\\.\\d{2}\\.\\d{4}", "13.03.1982",
        "(a|b)*c", "ababab c",
        "[]a-]x?|\\W", "]-",
        NULL};
    unsigned char h[2];
    char name[64];
    size_t n;
    int i;
    for (i = 0; ds[i].name; i++) {
        char *lines = first_lines(ds[i].file, 3, &n);
        h[0] = ds[i].b0;
        h[1] = ds[i].b1;
        seed2("dataset", ds[i].name, h, 2, lines, n);
        free(lines);
    }
    h[0] = 3;
    h[1] = 0;
    seed2("dataset", "chat", h, 2, chat_lines, sizeof chat_lines - 1);
    h[0] = 4;
    h[1] = 2 | 1;
    seed2("dataset", "preference_messages_llama3_spm", h, 2, pref_lines, sizeof pref_lines - 1);
    for (i = 0; tok[i].text; i++) {
        snprintf(name, sizeof name, "text_%d", i);
        seed2("tokenizer", name, &tok[i].b0, 1, tok[i].text, strlen(tok[i].text));
    }
    for (i = 0; regex[i]; i += 2) {
        size_t np = strlen(regex[i]), nt = strlen(regex[i + 1]);
        char buf[256];
        memcpy(buf, regex[i], np);
        buf[np] = 0;
        memcpy(buf + np + 1, regex[i + 1], nt);
        snprintf(name, sizeof name, "regex_%d", i / 2);
        seed("regex", name, buf, np + 1 + nt);
    }
    /* chat: byte 0 (bit 0: generation prompt; bit 1: the template is built in, index byte 0 >> 2),
       then NUL-separated pieces: the template (unless built in), then messages, each a role byte
       (0 system, 1 user, 2 assistant, ...) and the content */
    for (i = 0; i < FT_FUZZ_N_TEMPLATES; i++) {
        static const char conv[] = "\0\x00You are terse.\0\x01Hello world\0\x02Hi, the test.\0\x01  and 12?  ";
        const char *t = ft_fuzz_templates[i] ? ft_fuzz_templates[i] : "chatml";
        size_t nt = strlen(t);
        char buf[2048];
        buf[0] = (char)(i & 1);
        memcpy(buf + 1, t, nt);
        memcpy(buf + 1 + nt, conv, sizeof conv - 1);
        snprintf(name, sizeof name, "template_%d", i);
        seed("chat", name, buf, 1 + nt + sizeof conv - 1);
    }
    {
        static const char builtin[] = "\x0b\x01question\0\x02" "answer\0\x00sys late\0\x03tool says";
        seed("chat", "builtin_llama3", builtin, sizeof builtin - 1);
    }
}

/* ---- peft and checkpoint (the tiny model) ------------------------------------------------------ */
static void seeds_adapters(ft_model *m) {
    char dir[1024], path[1200], name[64];
    int k;
    ft_fuzz_path(dir, sizeof dir, "peft_dir");
    for (k = 0; k < FT_FUZZ_PEFT_COUNT; k++) {
        ft_peft *p = ft_fuzz_peft_attach(m, k);
        if (k < FT_FUZZ_PEFT_N_PEFT) {
            size_t nc = 0, ns = 0;
            unsigned char *cfg, *st, h[3];
            FT_FUZZ_MUST(ft_peft_save(p, dir, FT_FORMAT_PEFT, "tiny-test-llama") == FT_OK);
            snprintf(path, sizeof path, "%s/adapter_config.json", dir);
            cfg = ft_fuzz_slurp(path, &nc);
            snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
            st = ft_fuzz_slurp(path, &ns);
            FT_FUZZ_MUST(cfg && st && nc < 65536);
            /* mode 0: config and safetensors from the input */
            h[0] = 0;
            h[1] = (unsigned char)(nc & 255);
            h[2] = (unsigned char)(nc >> 8);
            {
                unsigned char *b = (unsigned char *)malloc(3 + nc + ns);
                FT_FUZZ_MUST(b != NULL);
                memcpy(b, h, 3);
                memcpy(b + 3, cfg, nc);
                memcpy(b + 3 + nc, st, ns);
                snprintf(name, sizeof name, "peft_dir_%d", k);
                seed("peft", name, b, 3 + nc + ns);
                free(b);
            }
            /* mode 1: the config from the input, the harness's own safetensors of adapter k */
            h[0] = (unsigned char)(1 + 3 * k);
            snprintf(name, sizeof name, "peft_config_%d", k);
            seed2("peft", name, h, 1, cfg, nc);
            if (k == FT_FUZZ_PEFT_LORA) {
                seed("json", "adapter_config", cfg, nc);
                seed("safetensors", "lora_adapter", st, ns);
            }
            free(cfg);
            free(st);
            ft_fuzz_rmtree(dir, 0);
        }
        /* mode 2: a GGUF adapter (llama.cpp's LoRA where it holds the adapter, finetune.h's own) */
        if (k == FT_FUZZ_PEFT_LORA || k == FT_FUZZ_PEFT_ADAPTER || k == FT_FUZZ_PEFT_PREFIX) {
            int f;
            for (f = 0; f < 2; f++) {
                ft_adapter_format fmt = f == 0 ? FT_FORMAT_LLAMACPP : FT_FORMAT_FINETUNE;
                unsigned char *b;
                size_t n;
                unsigned char h = 2;
                if (ft_peft_can_save(p, fmt) != FT_OK) continue;
                snprintf(path, sizeof path, "%s.gguf", dir);
                FT_FUZZ_MUST(ft_peft_save(p, path, fmt, NULL) == FT_OK);
                b = ft_fuzz_slurp(path, &n);
                FT_FUZZ_MUST(b != NULL);
                snprintf(name, sizeof name, "gguf_%s_%d", f == 0 ? "llamacpp" : "finetune", k);
                seed2("peft", name, &h, 1, b, n);
                free(b);
                remove(path);
            }
        }
        ft_peft_free(p);
    }
}
static void seeds_checkpoint(ft_model *m) {
    char path[1024];
    int k;
    ft_fuzz_path(path, sizeof path, "ckpt.gguf");
    for (k = 0; k < 2; k++) {                      /* the harness's LoRA; DoRA has more tensors */
        ft_peft *p = ft_fuzz_peft_attach(m, k == 0 ? FT_FUZZ_PEFT_LORA : FT_FUZZ_PEFT_DORA);
        ft_optim *o;
        ft_rng rng;
        ft_train_state st;
        FT_FUZZ_MUST(ft_optim_init(&o, ft_peft_params(p), NULL) == FT_OK);
        ft_rng_seed(&rng, 42);
        memset(&st, 0, sizeof st);
        st.step = 3;
        st.epoch = 1;
        st.data_pos = 12;
        st.data_seed = 77;
        st.tokens = 1234.0;
        st.obj[0] = 0.05;
        FT_FUZZ_MUST(ft_checkpoint_save(path, ft_peft_params(p), o, &rng, &st) == FT_OK);
        seed_file("checkpoint", k == 0 ? "lora" : "dora", path);
        if (k == 0) {
            FT_FUZZ_MUST(ft_checkpoint_save(path, ft_peft_params(p), NULL, NULL, &st) == FT_OK);
            seed_file("checkpoint", "lora_no_optimizer", path);
        }
        ft_optim_free(o);
        ft_peft_free(p);
    }
}

/* hf: each tiny model's config.json and tokenizer.json (tests/fixtures/hf), in fuzz_hf.c's layout,
   its weights the harness's own copy of that model's (byte 0 = k); the first also written back */
static void seeds_hf(void) {
    static const char *const names[9] = {"llama3", "llama_linear", "llama_yarn", "qwen3", "gemma3", "phi3", "phi3_longrope", "qwen3moe", "olmoe"};
    char path[256], name[64];
    int k;
    for (k = 0; k < 9; k++) {
        size_t nc, nt;
        unsigned char *c, *t, *b;
        snprintf(path, sizeof path, "tests/fixtures/hf/%s/config.json", names[k]);
        FT_FUZZ_MUST((c = ft_fuzz_slurp(path, &nc)) != NULL && nc < 65536);
        snprintf(path, sizeof path, "tests/fixtures/hf/%s/tokenizer.json", names[k]);
        FT_FUZZ_MUST((t = ft_fuzz_slurp(path, &nt)) != NULL && nt < 65536);
        FT_FUZZ_MUST((b = (unsigned char *)malloc(5 + nc + nt)) != NULL);
        b[0] = (unsigned char)(k | (k == 0 ? 0x40 : 0));
        b[1] = (unsigned char)(nc & 255); b[2] = (unsigned char)(nc >> 8);
        memcpy(b + 3, c, nc);
        b[3 + nc] = (unsigned char)(nt & 255); b[4 + nc] = (unsigned char)(nt >> 8);
        memcpy(b + 5 + nc, t, nt);
        snprintf(name, sizeof name, "%s", names[k]);
        seed("hf", name, b, 5 + nc + nt);
        free(b); free(c); free(t);
    }
}

int main(int argc, char **argv) {
    ft_model *m;
    int i, bad = 0;
    if (argc > 1) OUT = argv[1];
    seeds_gguf();
    seeds_model();
    seeds_safetensors_json();
    seeds_text();
    m = ft_fuzz_tiny_model();
    seeds_adapters(m);
    seeds_checkpoint(m);
    ft_model_free(m);
    seeds_hf();
    for (i = 0; TARGETS[i]; i++) {
        printf("%-12s %6ld bytes\n", TARGETS[i], corpus_bytes[i]);
        if (corpus_bytes[i] >= 65536) {
            printf("make_seeds: the %s corpus is over 64 KiB\n", TARGETS[i]);
            bad = 1;
        }
    }
    return bad;
}
