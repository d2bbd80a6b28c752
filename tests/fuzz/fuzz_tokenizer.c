/* fuzz_tokenizer.c - libFuzzer harness of the tokenizer on arbitrary text: byte-level BPE under
   each pre-tokenizer (smollm, gpt2, llama3, qwen2, default) and SentencePiece, as fuzz_common.h
   builds them. Byte 0: bits 0-2 the tokenizer (modulo 6), bit 3 add_bos, bit 4 parse_special,
   bit 5 show_special; the rest is the text (any bytes, its length given).
   ft_tokenize (size query with ids NULL / cap 0, then the real call, then one into a buffer of
   half the size), ft_detokenize (size query, exact buffer with and without room for the NUL, a
   buffer one byte short) and ft_token_to_piece of every id.
   Asserts what the header documents: the size query equals the real count, a short buffer gets
   the first cap ids of the full result, ids are inside the vocabulary, detokenize returns its
   length, NUL-terminates when there is room and writes nothing into a buffer too small. The
   header does not promise detokenize(tokenize(x)) == x (llama.cpp's clean-up of spaces, a
   SentencePiece space prefix, bytes a vocabulary lacks), so that is not asserted. No memory
   error, no undefined behaviour, no leak. */
#define _POSIX_C_SOURCE 200809L
#define FINETUNE_IMPLEMENTATION
#include "../../finetune.h"
#include "fuzz_common.h"

static ft_tokenizer *tok[FT_FUZZ_TOK_COUNT];

static void cleanup(void) {
    int i;
    for (i = 0; i < FT_FUZZ_TOK_COUNT; i++) ft_tokenizer_free(tok[i]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    int i;
    (void)argc;
    (void)argv;
    for (i = 0; i < FT_FUZZ_TOK_COUNT; i++) tok[i] = ft_fuzz_tokenizer(i);
    atexit(cleanup);
    return 0;
}

static void check_detokenize(const ft_tokenizer *t, const int32_t *ids, int64_t n, int show) {
    int64_t len = ft_detokenize(t, ids, n, NULL, 0, show), k;
    char *buf;
    FT_FUZZ_CHECK(len >= 0);
    buf = (char *)malloc((size_t)len + 1);
    FT_FUZZ_MUST(buf != NULL);
    k = ft_detokenize(t, ids, n, buf, len + 1, show);
    FT_FUZZ_CHECK(k == len && buf[len] == 0);
    if (len > 0) {
        char *exact = (char *)malloc((size_t)len);
        char *shorter = (char *)malloc((size_t)len);
        FT_FUZZ_MUST(exact && shorter);
        k = ft_detokenize(t, ids, n, exact, len, show);             /* no room for the NUL */
        FT_FUZZ_CHECK(k == len && memcmp(exact, buf, (size_t)len) == 0);
        memset(shorter, 0xA5, (size_t)len);
        k = ft_detokenize(t, ids, n, shorter, len - 1, show);        /* too small: untouched */
        FT_FUZZ_CHECK(k == len);
        for (k = 0; k < len; k++) FT_FUZZ_CHECK((unsigned char)shorter[k] == 0xA5);
        free(exact);
        free(shorter);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const ft_tokenizer *t;
    const char *text;
    int64_t len, n, i, k;
    int add_bos, special, show;
    int32_t *ids, *half;
    if (size < 1) return 0;
    t = tok[(data[0] & 7) % FT_FUZZ_TOK_COUNT];
    add_bos = (data[0] >> 3) & 1;
    special = (data[0] >> 4) & 1;
    show = (data[0] >> 5) & 1;
    text = (const char *)data + 1;
    len = (int64_t)size - 1;
    n = ft_tokenize(t, text, len, NULL, 0, add_bos, special);
    FT_FUZZ_CHECK(n >= 0);
    ids = (int32_t *)malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    FT_FUZZ_MUST(ids != NULL);
    k = ft_tokenize(t, text, len, ids, n, add_bos, special);
    FT_FUZZ_CHECK(k == n);
    for (i = 0; i < n; i++) FT_FUZZ_CHECK(ids[i] >= 0 && ids[i] < ft_tokenizer_n_vocab(t));
    if (n >= 2) {
        int64_t h = n / 2;
        half = (int32_t *)malloc((size_t)h * sizeof(int32_t));
        FT_FUZZ_MUST(half != NULL);
        k = ft_tokenize(t, text, len, half, h, add_bos, special);
        FT_FUZZ_CHECK(k == n && memcmp(half, ids, (size_t)h * sizeof(int32_t)) == 0);
        free(half);
    }
    check_detokenize(t, ids, n, show);
    for (i = 0; i < n; i++) {
        char piece[256];
        int64_t m = ft_token_to_piece(t, ids[i], NULL, 0, show);
        FT_FUZZ_CHECK(m >= 0);
        if (m <= (int64_t)sizeof piece) FT_FUZZ_CHECK(ft_token_to_piece(t, ids[i], piece, m, show) == m);
    }
    free(ids);
    return 0;
}
