/* test_gguf.c - the GGUF writer and reader round trip, and a corrupt-file suite: every
   truncation, lying counts and lengths, bad types, absurd dimensions, offsets past the end,
   duplicates. Each must give FT_ERR_FORMAT with the file name and an offset, never a crash. */
#include "../finetune.h"
#include "ft_test.h"

static const char *PATH = "build/test_gguf_tmp.gguf";

static float T0[64];
static uint16_t T1[64];
static int write_sample(const char *path) {
    ft_gguf_writer *w; int i; int32_t arr[5] = {1, -2, 3, -4, 5};
    ft_gguf_str strs[3] = {{"a", 1}, {"", 0}, {"\xc4\xa0hello", 7}};
    int64_t ne0[2] = {3, 4}, ne1[1] = {64};
    for (i = 0; i < 12; i++) T0[i] = (float)i * 0.5f;
    for (i = 0; i < 64; i++) T1[i] = ft_fp32_to_fp16((float)i);
    if (ft_gguf_writer_init(&w) != FT_OK) return 0;
    ft_gguf_set_str(w, "general.architecture", "llama");
    ft_gguf_set_int(w, "llama.block_count", FT_GGUF_UINT32, 30);
    ft_gguf_set_int(w, "some.i64", FT_GGUF_INT64, -1234567890123LL);
    ft_gguf_set_int(w, "some.u8", FT_GGUF_UINT8, 200);
    ft_gguf_set_int(w, "some.bool", FT_GGUF_BOOL, 1);
    ft_gguf_set_float(w, "llama.rope.freq_base", FT_GGUF_FLOAT32, 10000.0);
    ft_gguf_set_float(w, "some.f64", FT_GGUF_FLOAT64, 0.125);
    ft_gguf_set_array(w, "some.arr", FT_GGUF_INT32, arr, 5);
    ft_gguf_set_str_array(w, "tokenizer.ggml.tokens", strs, 3);
    ft_gguf_set_int(w, "llama.block_count", FT_GGUF_UINT32, 2);        /* replaces */
    ft_gguf_add_tensor(w, "t0", FT_TYPE_F32, 2, ne0, T0);
    ft_gguf_add_tensor(w, "t1.f16", FT_TYPE_F16, 1, ne1, T1);
    ft_gguf_add_tensor(w, "tX", FT_TYPE_F32, 1, ne1, T0);      /* 64 floats from T0.. (reads T0, T1) */
    i = ft_gguf_write(w, path) == FT_OK;
    ft_gguf_writer_free(w);
    return i;
}

TEST(write_then_read) {
    ft_gguf *g; int64_t v; double f; ft_gguf_str s; const ft_gguf_kv *kv; const ft_gguf_tensor *t;
    CHECK(write_sample(PATH), "write: %s", ft_last_error());
    CHECK_OK(ft_gguf_open(&g, PATH));
    if (!g) return;
    CHECK(ft_gguf_version(g) == 3 && ft_gguf_n_kv(g) == 9 && ft_gguf_n_tensors(g) == 3, "counts %lld %lld", (long long)ft_gguf_n_kv(g), (long long)ft_gguf_n_tensors(g));
    CHECK(ft_gguf_get_str(g, "general.architecture", &s) && s.n == 5 && memcmp(s.s, "llama", 5) == 0, "arch");
    CHECK(ft_gguf_get_int(g, "llama.block_count", &v) && v == 2, "replaced value %lld", (long long)v);
    CHECK(ft_gguf_get_int(g, "some.i64", &v) && v == -1234567890123LL, "i64");
    CHECK(ft_gguf_get_int(g, "some.u8", &v) && v == 200, "u8");
    CHECK(ft_gguf_get_int(g, "some.bool", &v) && v == 1, "bool");
    CHECK(ft_gguf_get_float(g, "llama.rope.freq_base", &f) && f == 10000.0, "f32");
    CHECK(ft_gguf_get_float(g, "some.f64", &f) && f == 0.125, "f64");
    CHECK(!ft_gguf_get_int(g, "nope", &v) && !ft_gguf_get_str(g, "llama.block_count", &s), "missing / wrong type");
    kv = ft_gguf_find(g, "some.arr");
    CHECK(kv && kv->type == FT_GGUF_ARRAY && kv->arr_type == FT_GGUF_INT32 && kv->n == 5 && ft_gguf_kv_int(kv, 3) == -4, "int array");
    kv = ft_gguf_find(g, "tokenizer.ggml.tokens");
    CHECK(kv && kv->n == 3 && kv->strs[1].n == 0 && kv->strs[2].n == 7 && memcmp(kv->strs[2].s, "\xc4\xa0hello", 7) == 0, "string array");
    t = ft_gguf_find_tensor(g, "t0");
    CHECK(t && t->type == FT_TYPE_F32 && t->n_dims == 2 && t->ne[0] == 3 && t->ne[1] == 4 && t->nbytes == 48, "t0 info");
    CHECK(t && memcmp(t->data, T0, 48) == 0, "t0 data");
    CHECK(t && (uintptr_t)t->offset % 32 == 0, "aligned");
    t = ft_gguf_find_tensor(g, "t1.f16");
    CHECK(t && t->type == FT_TYPE_F16 && t->nbytes == 128 && memcmp(t->data, T1, 128) == 0, "t1");
    CHECK(t && t->offset == 64, "second tensor at the next aligned offset (%llu)", t ? (unsigned long long)t->offset : 0ull);
    ft_gguf_close(g);
}

TEST(missing_file) {
    ft_gguf *g; ft_result r = ft_gguf_open(&g, "build/does/not/exist.gguf");
    CHECK(r == FT_ERR_IO && g == NULL, "%s", ft_result_string(r));
    CHECK(strstr(ft_last_error(), "does/not/exist.gguf") != NULL, "names the file: %s", ft_last_error());
}

static int opens(const unsigned char *b, size_t n, char *msg, size_t cap) {
    ft_gguf *g; ft_result r = ft_gguf_open_memory(&g, b, n, "corrupt.gguf");
    if (r == FT_OK) { ft_gguf_close(g); return 1; }
    snprintf(msg, cap, "%s", ft_last_error());
    return r == FT_ERR_FORMAT ? 0 : -1;
}

TEST(every_truncation_is_a_clean_error) {
    size_t n, k; unsigned char *b = ft_test_slurp(PATH, &n); char msg[1100]; int bad = 0;
    if (!b) { CHECK(0, "no sample file"); return; }
    for (k = 0; k < n; k++) {
        int r = opens(b, k, msg, sizeof msg);
        if (r != 0 || !strstr(msg, "corrupt.gguf: offset")) { bad++; if (bad < 4) printf("    prefix %zu: %d %s\n", k, r, msg); }
    }
    CHECK(bad == 0, "%d of %zu truncations not reported as format errors with an offset", bad, n);
    CHECK(opens(b, n, msg, sizeof msg) == 1, "the whole file opens");
    free(b);
}

/* patch bytes at an offset, expect a format error whose message contains `expect` */
static void corrupt(const unsigned char *orig, size_t n, size_t off, const void *patch, size_t len, const char *expect) {
    unsigned char *b = (unsigned char *)malloc(n); char msg[1100];
    memcpy(b, orig, n); memcpy(b + off, patch, len);
    CHECK(opens(b, n, msg, sizeof msg) == 0 && strstr(msg, expect) != NULL, "patch at %zu: want '%s', got '%s'", off, expect, msg);
    free(b);
}

static size_t find(const unsigned char *b, size_t n, const char *s) {
    size_t k, l = strlen(s);
    for (k = 0; k + l <= n; k++) if (memcmp(b + k, s, l) == 0) return k;
    return 0;
}

TEST(lying_fields_are_caught) {
    size_t n; unsigned char *b = ft_test_slurp(PATH, &n);
    uint64_t huge = 0x7fffffffffffffffULL, big = 1ull << 41, u = 0; uint32_t u32;
    size_t t0, kvarr, tok;
    if (!b) { CHECK(0, "no sample"); return; }
    corrupt(b, n, 0, "GGUX", 4, "bad magic");
    u32 = 7; corrupt(b, n, 4, &u32, 4, "unsupported GGUF version");
    corrupt(b, n, 8, &huge, 8, "count larger than the file");             /* tensor count */
    corrupt(b, n, 16, &huge, 8, "count larger than the file");            /* kv count */
    corrupt(b, n, 24, &huge, 8, "string length");                         /* first key length */
    kvarr = find(b, n, "some.arr") + 8;                                   /* value type of some.arr */
    u32 = 77; corrupt(b, n, kvarr, &u32, 4, "unknown value type");
    corrupt(b, n, kvarr + 8, &huge, 8, "array length larger");
    tok = find(b, n, "tokenizer.ggml.tokens") + 21 + 8;                   /* its array length */
    corrupt(b, n, tok, &big, 8, "array length larger");
    t0 = find(b, n, "t0") - 8;                                            /* tensor info of t0 */
    u32 = 5; corrupt(b, n, t0 + 10, &u32, 4, "n_dims not in 1..4");
    corrupt(b, n, t0 + 14, &huge, 8, "absurd dimension");
    u32 = 99; corrupt(b, n, t0 + 30, &u32, 4, "unknown tensor type");
    u = 1ull << 30; corrupt(b, n, t0 + 34, &u, 8, "runs past the end");
    u = 4; corrupt(b, n, t0 + 34, &u, 8, "not aligned");
    u32 = FT_TYPE_Q4_0; corrupt(b, n, t0 + 30, &u32, 4, "not a multiple of the type's block");
    corrupt(b, n, find(b, n, "tX"), "t0", 2, "duplicate tensor name");
    corrupt(b, n, find(b, n, "some.i64"), "some.arr", 8, "duplicate metadata key");
    free(b);
}

TEST(random_corruption_never_crashes) {
    size_t n, k; unsigned char *b = ft_test_slurp(PATH, &n), *c; ft_rng r; int ok = 0, err = 0;
    if (!b) { CHECK(0, "no sample"); return; }
    c = (unsigned char *)malloc(n);
    ft_rng_seed(&r, 77);
    for (k = 0; k < 3000; k++) {
        ft_gguf *g; int j, flips = 1 + (int)(ft_rng_u64(&r) % 4);
        memcpy(c, b, n);
        for (j = 0; j < flips; j++) c[ft_rng_u64(&r) % n] ^= (unsigned char)(1u << (ft_rng_u64(&r) % 8));
        if (ft_gguf_open_memory(&g, c, n, "fuzz.gguf") == FT_OK) {
            int64_t i;
            for (i = 0; i < ft_gguf_n_tensors(g); i++) {       /* every tensor must lie inside */
                const ft_gguf_tensor *t = ft_gguf_tensor_at(g, i);
                CHECK((const unsigned char *)t->data >= c && (const unsigned char *)t->data + t->nbytes <= c + n, "tensor outside");
            }
            ft_gguf_close(g); ok++;
        } else err++;
    }
    printf("    3000 random bit flips: %d opened, %d rejected, no crash\n", ok, err);
    free(b); free(c);
}

int main(void) {
    RUN(write_then_read);
    RUN(missing_file);
    RUN(every_truncation_is_a_clean_error);
    RUN(lying_fields_are_caught);
    RUN(random_corruption_never_crashes);
    remove(PATH);
    return ft_test_summary("test_gguf");
}
