/* fuzz_json.c - libFuzzer harness of the strict JSON parser (JSONL lines, adapter_config.json,
   safetensors headers): ft_json_parse on the input, then the whole tree through ft_json_at,
   ft_json_key_at, ft_json_value_at and ft_json_get.
   Asserts: an accepted input is JSON as RFC 8259 has it (checked here: every \u escape has four
   hex digits), the accessors agree with the nodes (n children, NULL past the end), strings are
   NUL-terminated at their length and valid UTF-8, keys are strings and ft_json_get finds a value
   under each key, nesting stays within the parser's 64 levels; no memory error, no undefined
   behaviour, no leak. */
#define _POSIX_C_SOURCE 200809L
#define FINETUNE_IMPLEMENTATION
#include "../../finetune.h"
#include "fuzz_common.h"

static void check_string(const ft_json *v) {
    const unsigned char *p = (const unsigned char *)v->s;
    const unsigned char *end = p + v->len;
    FT_FUZZ_CHECK(v->s != NULL && v->len >= 0);
    FT_FUZZ_CHECK(v->s[v->len] == 0);
    while (p < end) {
        int k = ft_utf8_len(p, end);
        FT_FUZZ_CHECK(k > 0);
        p += k;
    }
}

static void walk(const ft_json *v, int depth) {
    int64_t i;
    FT_FUZZ_CHECK(v != NULL && depth <= 65);
    switch (v->kind) {
    case FT_JSON_NULL:
        break;
    case FT_JSON_BOOL:
        FT_FUZZ_CHECK(v->num == 0 || v->num == 1);
        break;
    case FT_JSON_NUMBER:
        ft_fuzz_sink += (unsigned)(v->num > 0);
        break;
    case FT_JSON_STRING:
        check_string(v);
        break;
    case FT_JSON_ARRAY:
        FT_FUZZ_CHECK(v->n >= 0);
        for (i = 0; i < v->n; i++) {
            FT_FUZZ_CHECK(ft_json_at(v, i) == &v->kid[i]);
            walk(ft_json_at(v, i), depth + 1);
        }
        FT_FUZZ_CHECK(ft_json_at(v, v->n) == NULL && ft_json_at(v, -1) == NULL);
        FT_FUZZ_CHECK(ft_json_key_at(v, 0) == NULL && ft_json_get(v, "") == NULL);
        break;
    case FT_JSON_OBJECT:
        FT_FUZZ_CHECK(v->n >= 0);
        for (i = 0; i < v->n; i++) {
            const ft_json *k = ft_json_key_at(v, i);
            const ft_json *x = ft_json_value_at(v, i);
            FT_FUZZ_CHECK(k != NULL && x != NULL && k->kind == FT_JSON_STRING);
            check_string(k);
            /* the last value of that key (duplicates: the last one wins); a key with a NUL
               inside is looked up by its first part */
            if ((int64_t)strlen(k->s) == k->len) FT_FUZZ_CHECK(ft_json_get(v, k->s) != NULL);
            walk(x, depth + 1);
        }
        FT_FUZZ_CHECK(ft_json_key_at(v, v->n) == NULL && ft_json_value_at(v, v->n) == NULL);
        FT_FUZZ_CHECK(ft_json_at(v, 0) == NULL);
        break;
    default:
        FT_FUZZ_CHECK(!"unknown kind");
    }
}

static int is_hex(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
/* RFC 8259: a backslash (only in strings) starts an escape; \u takes exactly 4 hex digits */
static void check_escapes(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (p[i] != '\\') {
            i++;
            continue;
        }
        FT_FUZZ_CHECK(i + 1 < n);
        if (p[i + 1] == 'u') {
            FT_FUZZ_CHECK(i + 5 < n && is_hex(p[i + 2]) && is_hex(p[i + 3]) && is_hex(p[i + 4]) && is_hex(p[i + 5]));
            i += 6;
        } else {
            i += 2;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ft_json_doc *d;
    ft_result r = ft_json_parse(&d, (const char *)data, size, "fuzz.json", 1);
    if (r != FT_OK) {
        FT_FUZZ_CHECK(d == NULL && r < 0);
        return 0;
    }
    check_escapes(data, size);
    walk(ft_json_root(d), 0);
    ft_json_free(d);
    return 0;
}
