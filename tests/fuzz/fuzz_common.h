/* fuzz_common.h - what the fuzz harnesses of tests/fuzz (and their seed generator, make_seeds.c)
   share: a temporary directory of this process, removed at exit; small file helpers; the
   tokenizers the harnesses run on (a byte-level BPE vocabulary under several pre-tokenizer
   names and a SentencePiece one, written as GGUF metadata and read back through
   ft_tokenizer_from_gguf); chat templates; the tiny llama model of tests/tiny_model.h and the
   adapters attached to it. Include it after finetune.h (with FINETUNE_IMPLEMENTATION) and
   define _POSIX_C_SOURCE 200809L before any include (mkdtemp, lstat). */
#ifndef FT_FUZZ_COMMON_H
#define FT_FUZZ_COMMON_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../tiny_model.h"

/* an assertion of the harness: a failure aborts, which libFuzzer reports as a crash */
#define FT_FUZZ_CHECK(cond) do {                                                        \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: FT_FUZZ_CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            abort();                                                                    \
        }                                                                               \
    } while (0)

/* a setup step of the harness that must not fail (not a finding about the input) */
#define FT_FUZZ_MUST(cond) do {                                                         \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: setup failed: %s (%s)\n", __FILE__, __LINE__, #cond, ft_last_error()); \
            exit(2);                                                                    \
        }                                                                               \
    } while (0)

/* reads of bytes the library handed out land here, so that they are not optimised away */
static volatile unsigned ft_fuzz_sink;
static inline void ft_fuzz_touch(const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    if (n == 0) return;
    ft_fuzz_sink += b[0];
    ft_fuzz_sink += b[n - 1];
}

/* ---- the temporary directory of this process ------------------------------------------------ */
static char ft_fuzz_dir_path[512];

static inline void ft_fuzz_rmtree(const char *path, int depth) {
    struct stat st;
    DIR *d;
    struct dirent *e;
    char sub[1536];
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode) && depth < 8) {
        d = opendir(path);
        while (d && (e = readdir(d)) != NULL) {
            int k;
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            k = snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            if (k > 0 && (size_t)k < sizeof sub) ft_fuzz_rmtree(sub, depth + 1);
        }
        if (d) closedir(d);
        rmdir(path);
        return;
    }
    unlink(path);
}
static void ft_fuzz_dir_remove(void) {
    if (ft_fuzz_dir_path[0]) ft_fuzz_rmtree(ft_fuzz_dir_path, 0);
}
/* $TMPDIR/ft_fuzz_XXXXXX (or /tmp/...), made on first use and removed at exit; a crash leaves it
   behind, so tests/fuzz/run.sh points TMPDIR at a scratch directory of its own */
static inline const char *ft_fuzz_dir(void) {
    if (!ft_fuzz_dir_path[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(ft_fuzz_dir_path, sizeof ft_fuzz_dir_path, "%s/ft_fuzz_XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(ft_fuzz_dir_path)) {
            perror("mkdtemp");
            exit(2);
        }
        atexit(ft_fuzz_dir_remove);
    }
    return ft_fuzz_dir_path;
}
static inline void ft_fuzz_path(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", ft_fuzz_dir(), name);
}
static inline void ft_fuzz_write(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    FT_FUZZ_MUST(f != NULL);
    FT_FUZZ_MUST(n == 0 || fwrite(data, 1, n, f) == n);
    FT_FUZZ_MUST(fclose(f) == 0);
}
/* a whole file in memory (NULL if unreadable); *n its size */
static inline unsigned char *ft_fuzz_slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    unsigned char *b;
    long sz;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = (unsigned char *)malloc((size_t)sz + 1);
    if (!b || fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        free(b);
        return NULL;
    }
    fclose(f);
    b[sz] = 0;
    *n = (size_t)sz;
    return b;
}
/* bytes [0, n) as a NUL-terminated string (malloc'd) */
static inline char *ft_fuzz_strndup(const unsigned char *p, size_t n) {
    char *s = (char *)malloc(n + 1);
    FT_FUZZ_MUST(s != NULL);
    if (n) memcpy(s, p, n);
    s[n] = 0;
    return s;
}

/* ---- tokenizers ----------------------------------------------------------------------------- */
enum { FT_FUZZ_TOK_SMOLLM = 0, FT_FUZZ_TOK_GPT2, FT_FUZZ_TOK_LLAMA3, FT_FUZZ_TOK_QWEN2, FT_FUZZ_TOK_DEFAULT,
       FT_FUZZ_TOK_SPM, FT_FUZZ_TOK_COUNT };
static const char *const ft_fuzz_tok_pre[FT_FUZZ_TOK_COUNT] = {"smollm", "gpt2", "llama-bpe", "qwen2", "default", NULL};

/* control tokens (the chat templates' markers) and one user-defined token */
static const char *const ft_fuzz_specials[] = {
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<|user|>", "<|assistant|>", "<|system|>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", NULL};
static const char *const ft_fuzz_user_token = "<tool_call>";

/* the byte-level BPE alphabet: byte b is written as one code point, b itself for the printable
   bytes, 256 + (how many unprintable bytes come before b) for the others */
static inline int ft_fuzz_byte_printable(unsigned b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
}
static inline unsigned ft_fuzz_byte_cp(unsigned b) {
    unsigned k, n = 0;
    if (ft_fuzz_byte_printable(b)) return b;
    for (k = 0; k < b; k++) if (!ft_fuzz_byte_printable(k)) n++;
    return 256 + n;
}
static inline size_t ft_fuzz_utf8(char *out, unsigned cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 63));
        return 2;
    }
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 63));
    out[2] = (char)(0x80 | (cp & 63));
    return 3;
}

/* merges of the BPE vocabulary, in rank order, over ASCII letters with 'G' standing for the space
   byte (written U+0120) and 'C' for the newline (U+010A); each adds the merged token */
static const char *const ft_fuzz_bpe_merges[] = {
    "h e", "l l", "he ll", "hell o", "G w", "o r", "Gw or", "l d", "Gwor ld", "G t", "t h", "Gt h", "Gth e",
    "i n", "G a", "a s", "s i", "t a", "n t", "1 2", "C C", "G G", "u s", "e r", "us er", "G hello", "a n",
    "an d", "G and", "o n", "G o", "Go n", "e s", "t e", "te s", "tes t", NULL};
/* SentencePiece pieces beyond the letters and digits (score: minus the index), 'U' standing for
   U+2581, the space marker */
static const char *const ft_fuzz_spm_pieces[] = {
    "U", "Ut", "Uth", "Uthe", "he", "ll", "Uh", "Uhe", "Uhello", "Uw", "or", "ld", "Uworld", "in", "er", "Ua",
    "and", "Uand", "on", "Uon", "es", "test", "Utest", "12", NULL};

/* the token text of an ASCII spelling: 'G' -> the space byte char, 'C' -> the newline byte char
   (BPE), 'U' -> U+2581 (SentencePiece); the rest as it is */
static inline size_t ft_fuzz_spell(char *out, const char *s, size_t n, int spm) {
    size_t i, k = 0;
    for (i = 0; i < n; i++) {
        if (!spm && s[i] == 'G') k += ft_fuzz_utf8(out + k, ft_fuzz_byte_cp(' '));
        else if (!spm && s[i] == 'C') k += ft_fuzz_utf8(out + k, ft_fuzz_byte_cp('\n'));
        else if (spm && s[i] == 'U') k += ft_fuzz_utf8(out + k, 0x2581);
        else out[k++] = s[i];
    }
    return k;
}

/* A chat template of each kind ft_chat_apply renders, in the Jinja form a GGUF carries, and some
   of the names it accepts. Index 0 (NULL) means ChatML. */
static const char *const ft_fuzz_templates[] = {
    NULL,
    /* ChatML with a default system prompt as one string literal (SmolLM2 / Qwen2 style) */
    "{%- for message in messages %}{%- if loop.first and messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a careful assistant that answers briefly.<|im_end|>\\n' }}{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
    /* Llama 3 */
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}",
    /* Zephyr */
    "{%- for message in messages %}{{- '<|' + message['role'] + '|>\\n' + message['content'] + '<|endoftext|>\\n' }}"
    "{%- endfor %}{# roles: <|user|> and the others #}",
    /* Llama 2 with a system block */
    "{{- bos_token }}{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{{- '<<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}{%- elif message['role'] == 'user' %}"
    "{{- '[INST] ' + message['content'] + ' [/INST]' }}{%- else %}{{- message['content'] + eos_token }}{%- endif %}{%- endfor %}",
    /* Llama 2, contents stripped */
    "{%- for message in messages %}{%- if message['role'] == 'user' %}{{- '[INST] ' + message['content'].strip() + ' [/INST]' }}"
    "{%- else %}{{- message['content'].strip() + eos_token }}{%- endif %}{%- endfor %}",
    "llama2",
    "llama2-sys-bos",
    NULL};
enum { FT_FUZZ_N_TEMPLATES = 8 };

/* the tokenizer.* keys of tokenizer `which` (FT_FUZZ_TOK_*) */
static inline void ft_fuzz_tokenizer_keys(ft_gguf_writer *w, int which) {
    static char pool[16384];
    ft_gguf_str toks[1024];
    ft_gguf_str merges[64];
    int32_t types[1024];
    float scores[1024];
    size_t used = 0;
    int n = 0, nm = 0, i, spm = which == FT_FUZZ_TOK_SPM;
    int32_t bos, eos, pad;
#define FT_FUZZ_ADD(text_, len_, type_, score_) do {                                    \
        memcpy(pool + used, text_, len_);                                               \
        toks[n].s = pool + used;                                                        \
        toks[n].n = (uint64_t)(len_);                                                   \
        types[n] = type_;                                                               \
        scores[n] = score_;                                                             \
        used += len_;                                                                   \
        n++;                                                                            \
    } while (0)
    if (spm) {
        char b6[8];
        FT_FUZZ_ADD("<unk>", 5, 2, 0.0f);
        FT_FUZZ_ADD("<s>", 3, 3, 0.0f);
        FT_FUZZ_ADD("</s>", 4, 3, 0.0f);
        for (i = 0; i < 256; i++) {
            snprintf(b6, sizeof b6, "<0x%02X>", i);
            FT_FUZZ_ADD(b6, 6, 6, 0.0f);
        }
        for (i = 0; ft_fuzz_spm_pieces[i]; i++) {
            char sp[64];
            size_t k = ft_fuzz_spell(sp, ft_fuzz_spm_pieces[i], strlen(ft_fuzz_spm_pieces[i]), 1);
            FT_FUZZ_ADD(sp, k, 1, -(float)i);
        }
        for (i = 0; i < 36; i++) {
            char c = (char)(i < 26 ? 'a' + i : '0' + (i - 26));
            FT_FUZZ_ADD(&c, 1, 1, -100.0f - (float)i);
        }
        bos = 1;
        eos = 2;
        pad = -1;
    } else {
        for (i = 0; i < 256; i++) {
            char u[4];
            size_t k = ft_fuzz_utf8(u, ft_fuzz_byte_cp((unsigned)i));
            FT_FUZZ_ADD(u, k, 1, 0.0f);
        }
        for (i = 0; ft_fuzz_bpe_merges[i]; i++) {
            const char *m = ft_fuzz_bpe_merges[i];
            const char *sp = strchr(m, ' ');
            char t[64], full[64];
            size_t a = ft_fuzz_spell(t, m, (size_t)(sp - m), 0), b, k;
            b = ft_fuzz_spell(t + a + 1, sp + 1, strlen(sp + 1), 0);
            t[a] = ' ';
            memcpy(pool + used, t, a + 1 + b);
            merges[nm].s = pool + used;
            merges[nm].n = a + 1 + b;
            used += a + 1 + b;
            nm++;
            memcpy(full, t, a);
            memcpy(full + a, t + a + 1, b);
            k = a + b;
            FT_FUZZ_ADD(full, k, 1, 0.0f);
        }
        bos = n;                                  /* <|endoftext|>, the first special token */
        eos = n + 2;                              /* <|im_end|>, as chat models end a turn  */
        pad = n;
    }
    for (i = 0; ft_fuzz_specials[i]; i++) FT_FUZZ_ADD(ft_fuzz_specials[i], strlen(ft_fuzz_specials[i]), 3, 0.0f);
    FT_FUZZ_ADD(ft_fuzz_user_token, strlen(ft_fuzz_user_token), 4, 0.0f);
#undef FT_FUZZ_ADD
    ft_gguf_set_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    if (ft_fuzz_tok_pre[which]) ft_gguf_set_str(w, "tokenizer.ggml.pre", ft_fuzz_tok_pre[which]);
    ft_gguf_set_str_array(w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    ft_gguf_set_array(w, "tokenizer.ggml.token_type", FT_GGUF_INT32, types, (uint64_t)n);
    if (spm) ft_gguf_set_array(w, "tokenizer.ggml.scores", FT_GGUF_FLOAT32, scores, (uint64_t)n);
    else ft_gguf_set_str_array(w, "tokenizer.ggml.merges", merges, (uint64_t)nm);
    ft_gguf_set_int(w, "tokenizer.ggml.bos_token_id", FT_GGUF_UINT32, bos);
    ft_gguf_set_int(w, "tokenizer.ggml.eos_token_id", FT_GGUF_UINT32, eos);
    if (pad >= 0) ft_gguf_set_int(w, "tokenizer.ggml.padding_token_id", FT_GGUF_UINT32, pad);
    ft_gguf_set_int(w, "tokenizer.ggml.add_bos_token", FT_GGUF_BOOL, spm);
    ft_gguf_set_str(w, "tokenizer.chat_template", ft_fuzz_templates[1]);
}

/* a GGUF with tokenizer `which` and nothing else, at path */
static inline void ft_fuzz_tokenizer_gguf(const char *path, int which) {
    ft_gguf_writer *w;
    FT_FUZZ_MUST(ft_gguf_writer_init(&w) == FT_OK);
    ft_gguf_set_str(w, "general.architecture", "llama");
    ft_gguf_set_str(w, "general.name", "fuzz-tokenizer");
    ft_fuzz_tokenizer_keys(w, which);
    FT_FUZZ_MUST(ft_gguf_write(w, path) == FT_OK);
    ft_gguf_writer_free(w);
}
/* tokenizer `which`, through a GGUF in the temporary directory */
static inline ft_tokenizer *ft_fuzz_tokenizer(int which) {
    char path[1024], name[64];
    ft_gguf *g;
    ft_tokenizer *t = NULL;
    snprintf(name, sizeof name, "tokenizer_%d.gguf", which);
    ft_fuzz_path(path, sizeof path, name);
    ft_fuzz_tokenizer_gguf(path, which);
    FT_FUZZ_MUST(ft_gguf_open(&g, path) == FT_OK);
    FT_FUZZ_MUST(ft_tokenizer_from_gguf(&t, g) == FT_OK && t != NULL);
    ft_gguf_close(g);
    remove(path);
    return t;
}

/* ---- the tiny model and its adapters ---------------------------------------------------------- */
/* tests/tiny_model.h's model (F32, seed 2) at path */
static inline void ft_fuzz_tiny_model_write(const char *path) {
    FT_FUZZ_MUST(tiny_model_write(path, FT_TYPE_F32, 2));
}
static inline ft_model *ft_fuzz_tiny_model(void) {
    char path[1024];
    ft_model *m;
    ft_fuzz_path(path, sizeof path, "tiny.gguf");
    ft_fuzz_tiny_model_write(path);
    FT_FUZZ_MUST(ft_model_load(&m, path, NULL) == FT_OK);
    return m;                                     /* the file stays mapped until ft_model_free */
}

/* the adapters the peft harness and its seeds use: small ones of every method PEFT's format holds,
   and a bottleneck adapter (finetune.h's own GGUF only) */
enum { FT_FUZZ_PEFT_LORA = 0, FT_FUZZ_PEFT_DORA, FT_FUZZ_PEFT_LOHA, FT_FUZZ_PEFT_IA3, FT_FUZZ_PEFT_PROMPT,
       FT_FUZZ_PEFT_PREFIX, FT_FUZZ_PEFT_ADAPTER, FT_FUZZ_PEFT_COUNT };
enum { FT_FUZZ_PEFT_N_PEFT = FT_FUZZ_PEFT_ADAPTER };   /* the first ones: those PEFT's files hold */
/* a context for the harnesses: one thread (libFuzzer runs one input at a time), a 4 MiB arena */
static inline ft_ctx *ft_fuzz_ctx(void) {
    ft_ctx *ctx = NULL;
    ft_ctx_opts co = ft_ctx_opts_default();
    co.n_threads = 1;
    co.arena_bytes = (size_t)4 << 20;
    FT_FUZZ_MUST(ft_ctx_init(&ctx, &co) == FT_OK);
    return ctx;
}
static inline ft_peft_opts ft_fuzz_peft_opts(int k) {
    ft_peft_opts o;
    switch (k) {
    case FT_FUZZ_PEFT_DORA:
        o = ft_peft_opts_default(FT_PEFT_LORA);
        o.lora.dora = 1;
        break;
    case FT_FUZZ_PEFT_LOHA: o = ft_peft_opts_default(FT_PEFT_LOHA); break;
    case FT_FUZZ_PEFT_IA3: o = ft_peft_opts_default(FT_PEFT_IA3); break;
    case FT_FUZZ_PEFT_PROMPT: o = ft_peft_opts_default(FT_PEFT_PROMPT); break;
    case FT_FUZZ_PEFT_PREFIX: o = ft_peft_opts_default(FT_PEFT_PREFIX); break;
    case FT_FUZZ_PEFT_ADAPTER: o = ft_peft_opts_default(FT_PEFT_ADAPTER); break;
    default: o = ft_peft_opts_default(FT_PEFT_LORA); break;
    }
    o.lora.r = 2;
    o.lora.alpha = 4.0f;
    o.lora.targets = FT_TARGET_Q | FT_TARGET_V;
    o.n_virtual = 2;
    o.bottleneck = 4;
    o.seed = 7 + (uint64_t)k;
    return o;
}
/* adapter k attached to m with its values moved off their init (B = 0 would hide A) */
static inline ft_peft *ft_fuzz_peft_attach(ft_model *m, int k) {
    ft_peft *p;
    ft_peft_opts o = ft_fuzz_peft_opts(k);
    ft_params *P;
    int i;
    FT_FUZZ_MUST(ft_peft_attach(&p, m, &o) == FT_OK);
    P = ft_peft_params(p);
    for (i = 0; i < ft_params_count(P); i++) {
        ft_tensor *t = ft_params_get(P, i);
        int64_t j;
        for (j = 0; j < ft_numel(t); j++) ((float *)t->data)[j] += 0.01f * (float)((j * 7 + i * 3) % 11 - 5);
    }
    return p;
}
#endif
