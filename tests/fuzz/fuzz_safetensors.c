/* fuzz_safetensors.c - libFuzzer harness of the safetensors reader: ft_safetensors_open_memory on
   the input, then each name (ft_safetensors_count / _name) looked up with ft_safetensors_get,
   whose dtype, shape and data are read: the first and the last byte of every tensor.
   Asserts: a tensor's bytes (its shape's elements times its dtype's size) lie inside the input's
   data section, the shape has at most 8 dimensions, names are found again; no memory error, no
   undefined behaviour, no leak. */
#define _POSIX_C_SOURCE 200809L
#define FINETUNE_IMPLEMENTATION
#include "../../finetune.h"
#include "fuzz_common.h"

static size_t dtype_size(const char *dt) {
    if (!strcmp(dt, "F32") || !strcmp(dt, "I32")) return 4;
    if (!strcmp(dt, "F16") || !strcmp(dt, "BF16")) return 2;
    if (!strcmp(dt, "F64") || !strcmp(dt, "I64")) return 8;
    if (!strcmp(dt, "U8") || !strcmp(dt, "I8") || !strcmp(dt, "BOOL")) return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ft_safetensors *s;
    int64_t i, n;
    uint64_t hn;
    if (ft_safetensors_open_memory(&s, data, size, "fuzz.safetensors") != FT_OK) return 0;
    FT_FUZZ_CHECK(size >= 8);
    memcpy(&hn, data, 8);
    n = ft_safetensors_count(s);
    FT_FUZZ_CHECK(n >= 0);
    for (i = 0; i < n; i++) {
        const char *name = ft_safetensors_name(s, i);
        const char *dt = NULL;
        int64_t shape[8];
        int nd = -1, d;
        const unsigned char *p;
        double elems = 1;
        size_t es;
        FT_FUZZ_CHECK(name != NULL);
        p = (const unsigned char *)ft_safetensors_get(s, name, &dt, shape, &nd);
        if (strcmp(name, "__metadata__") == 0) {
            FT_FUZZ_CHECK(p == NULL);
            continue;
        }
        /* a key with a NUL inside is another key to ft_safetensors_get: it may miss */
        if (!p) continue;
        FT_FUZZ_CHECK(dt != NULL && nd >= 0 && nd <= 8);
        es = dtype_size(dt);
        FT_FUZZ_CHECK(es > 0);
        for (d = 0; d < nd; d++) {
            FT_FUZZ_CHECK(shape[d] >= 0);
            elems *= (double)shape[d];
        }
        if (elems > 0) {
            /* the reader copied the input: its data section is the same size after the header */
            size_t bytes = (size_t)elems * es;
            FT_FUZZ_CHECK(elems * (double)es <= (double)(size - 8 - hn));
            ft_fuzz_touch(p, bytes);
        }
        FT_FUZZ_CHECK(ft_safetensors_get(s, name, NULL, NULL, NULL) == p);
    }
    FT_FUZZ_CHECK(ft_safetensors_name(s, n) == NULL);
    ft_safetensors_close(s);
    return 0;
}
