/* fuzz_gguf.c - libFuzzer harness of the GGUF reader: ft_gguf_open_memory on the input, then every
   accessor the API offers (version, alignment, each key/value with ft_gguf_kv_int / _float on
   numeric elements and the bytes of each string, ft_gguf_find and ft_gguf_get_* by each key, each
   tensor and ft_gguf_find_tensor by its name, ft_gguf_check_finite, which decodes every tensor),
   then ft_tokenizer_from_gguf and, when the file has a vocabulary, a tokenize / detokenize of a
   fixed text and every token's piece.
   Asserts: what the reader hands out lies inside the input (keys, strings, array data, tensor
   data), a tensor's bytes are its row bytes times its rows, every key and tensor name is found
   again by name, token ids are inside the vocabulary; no memory error, no undefined behaviour,
   no leak. */
#define _POSIX_C_SOURCE 200809L
#define FINETUNE_IMPLEMENTATION
#include "../../finetune.h"
#include "fuzz_common.h"

static const unsigned char *in_lo, *in_hi;

/* p[0..n) inside the input */
static void check_inside(const void *p, uint64_t n) {
    const unsigned char *b = (const unsigned char *)p;
    if (n == 0) return;
    FT_FUZZ_CHECK(b >= in_lo && b <= in_hi && n <= (uint64_t)(in_hi - b));
    ft_fuzz_touch(b, (size_t)n);
}

static void walk_kv(const ft_gguf *g, const ft_gguf_kv *kv) {
    char key[256];
    uint64_t i;
    check_inside(kv->key.s, kv->key.n);
    if (kv->arr_type == FT_GGUF_STRING) {
        FT_FUZZ_CHECK(kv->strs != NULL);
        for (i = 0; i < kv->n; i++) check_inside(kv->strs[i].s, kv->strs[i].n);
    } else if (kv->arr_type != FT_GGUF_ARRAY) {
        uint64_t lim = kv->n < 64 ? kv->n : 64;
        for (i = 0; i < lim; i++) {
            ft_fuzz_sink += (unsigned)ft_gguf_kv_int(kv, i);
            ft_fuzz_sink += (unsigned)(ft_gguf_kv_float(kv, i) != 0.0);
        }
        if (kv->n > 0) {
            ft_fuzz_sink += (unsigned)ft_gguf_kv_int(kv, kv->n - 1);
            ft_fuzz_sink += (unsigned)(ft_gguf_kv_float(kv, kv->n - 1) != 0.0);
        }
        ft_fuzz_sink += (unsigned)ft_gguf_kv_int(kv, kv->n);        /* past the end: 0 */
    }
    /* by name: the first key of that name (keys are unique), unless it holds a NUL */
    if (kv->key.n < sizeof key && !memchr(kv->key.s, 0, (size_t)kv->key.n)) {
        int64_t iv;
        double dv;
        ft_gguf_str sv;
        memcpy(key, kv->key.s, (size_t)kv->key.n);
        key[kv->key.n] = 0;
        FT_FUZZ_CHECK(ft_gguf_find(g, key) == kv);
        if (ft_gguf_get_int(g, key, &iv)) ft_fuzz_sink += (unsigned)iv;
        if (ft_gguf_get_float(g, key, &dv)) ft_fuzz_sink += (unsigned)(dv != 0.0);
        if (ft_gguf_get_str(g, key, &sv)) check_inside(sv.s, sv.n);
    }
}

static void walk_tensor(const ft_gguf *g, const ft_gguf_tensor *t) {
    char name[256];
    int d;
    int64_t rows = 1;
    check_inside(t->name.s, t->name.n);
    FT_FUZZ_CHECK(t->n_dims >= 1 && t->n_dims <= 4);
    for (d = 1; d < 4; d++) rows *= t->ne[d];
    FT_FUZZ_CHECK(t->ne[0] == 0 || t->nbytes == ft_type_row_bytes(t->type, t->ne[0]) * (size_t)rows);
    check_inside(t->data, t->nbytes);
    ft_fuzz_sink += (unsigned)ft_type_block(t->type);
    ft_fuzz_sink += (unsigned)strlen(ft_type_name(t->type));
    if (t->name.n < sizeof name && !memchr(t->name.s, 0, (size_t)t->name.n)) {
        memcpy(name, t->name.s, (size_t)t->name.n);
        name[t->name.n] = 0;
        FT_FUZZ_CHECK(ft_gguf_find_tensor(g, name) == t);
    }
}

static void try_tokenizer(const ft_gguf *g) {
    static const char text[] = "Hello world, the test <|im_start|>user\n12 caf\xc3\xa9 \xf0\x9f\x99\x82";
    ft_tokenizer *t = NULL;
    int32_t ids[256];
    char out[2048];
    int64_t n, i, k;
    if (ft_tokenizer_from_gguf(&t, g) != FT_OK || !t) return;
    ft_fuzz_sink += (unsigned)(ft_tokenizer_bos(t) + ft_tokenizer_eos(t) + ft_tokenizer_pad(t));
    ft_fuzz_sink += (unsigned)ft_tokenizer_find(t, "<|im_end|>");
    n = ft_tokenize(t, text, -1, ids, 256, 1, 1);
    if (n >= 0) {
        int64_t m = n < 256 ? n : 256;
        for (i = 0; i < m; i++) FT_FUZZ_CHECK(ids[i] >= 0 && ids[i] < ft_tokenizer_n_vocab(t));
        k = ft_detokenize(t, ids, m, out, sizeof out, 1);
        if (k >= 0 && k < (int64_t)sizeof out) FT_FUZZ_CHECK(out[k] == 0);
        for (i = 0; i < m; i++) ft_fuzz_sink += (unsigned)ft_token_to_piece(t, ids[i], out, sizeof out, i & 1);
    }
    /* every token's piece, as a decoder of generated ids meets them */
    for (i = 0; i < ft_tokenizer_n_vocab(t) && i < 4096; i++) ft_fuzz_sink += (unsigned)ft_token_to_piece(t, (int32_t)i, out, sizeof out, 1);
    ft_tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ft_gguf *g;
    int64_t i;
    in_lo = data;
    in_hi = data + size;
    if (ft_gguf_open_memory(&g, data, size, "fuzz.gguf") != FT_OK) return 0;
    FT_FUZZ_CHECK(ft_gguf_version(g) == 2 || ft_gguf_version(g) == 3);
    FT_FUZZ_CHECK(ft_gguf_alignment(g) >= 1);
    ft_fuzz_sink += (unsigned)strlen(ft_gguf_path(g));
    for (i = 0; i < ft_gguf_n_kv(g); i++) walk_kv(g, ft_gguf_kv_at(g, i));
    FT_FUZZ_CHECK(ft_gguf_kv_at(g, ft_gguf_n_kv(g)) == NULL);
    for (i = 0; i < ft_gguf_n_tensors(g); i++) walk_tensor(g, ft_gguf_tensor_at(g, i));
    FT_FUZZ_CHECK(ft_gguf_tensor_at(g, -1) == NULL);
    ft_fuzz_sink += (unsigned)ft_gguf_check_finite(g);                 /* decodes every tensor */
    try_tokenizer(g);
    ft_gguf_close(g);
    return 0;
}
