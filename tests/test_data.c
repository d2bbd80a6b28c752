/* test_data.c - the strict JSON / JSONL reader: values, escapes, UTF-8, and malformed lines
   reported with file:line:column. */
#include "../finetune.h"
#include "ft_test.h"

static ft_json_doc *parse(const char *s) {
    ft_json_doc *d = NULL;
    ft_json_parse(&d, s, strlen(s), "t.jsonl", 7);
    return d;
}
static int bad(const char *s, const char *expect) {
    ft_json_doc *d = NULL; ft_result r = ft_json_parse(&d, s, strlen(s), "t.jsonl", 7);
    if (r == FT_OK) { ft_json_free(d); return 0; }
    return r == FT_ERR_FORMAT && strstr(ft_last_error(), "t.jsonl:7:") && strstr(ft_last_error(), expect);
}

TEST(json_values) {
    ft_json_doc *d = parse(" {\"instruction\": \"Say \\\"hi\\\"\\n\", \"n\": -12.5e1, \"ok\": true, \"x\": null,"
                           " \"msgs\": [{\"role\": \"user\", \"content\": \"\\u00e9\\ud83d\\ude00 caf\xc3\xa9\"}, []], \"n\": 3} ");
    const ft_json *r, *m;
    CHECK(d != NULL, "parse: %s", ft_last_error());
    if (!d) return;
    r = ft_json_root(d);
    CHECK(r->kind == FT_JSON_OBJECT && r->n == 6, "object of 6 pairs");
    CHECK(strcmp(ft_json_get(r, "instruction")->s, "Say \"hi\"\n") == 0, "escapes");
    CHECK(ft_json_get(r, "n")->num == 3, "the last duplicate key wins");
    CHECK(ft_json_get(r, "ok")->kind == FT_JSON_BOOL && ft_json_get(r, "ok")->num == 1, "true");
    CHECK(ft_json_get(r, "x")->kind == FT_JSON_NULL && ft_json_get(r, "nope") == NULL, "null / absent");
    m = ft_json_get(r, "msgs");
    CHECK(m && m->kind == FT_JSON_ARRAY && m->n == 2 && ft_json_at(m, 1)->kind == FT_JSON_ARRAY && ft_json_at(m, 1)->n == 0, "array");
    CHECK(strcmp(ft_json_get(ft_json_at(m, 0), "content")->s, "\xc3\xa9\xf0\x9f\x98\x80 caf\xc3\xa9") == 0, "\\u escapes and a surrogate pair to UTF-8");
    CHECK(strcmp(ft_json_key_at(r, 1)->s, "n") == 0 && ft_json_value_at(r, 1)->num == -125.0, "numbers");
    ft_json_free(d);
}

TEST(json_errors_name_line_and_column) {
    CHECK(bad("{\"a\": 1", "expected ',' or '}'"), "%s", ft_last_error());
    CHECK(bad("{\"a\" 1}", "expected ':'"), "%s", ft_last_error());
    CHECK(bad("{a: 1}", "expected a \"key\""), "%s", ft_last_error());
    CHECK(bad("[1, 2,]", "unexpected character"), "%s", ft_last_error());
    CHECK(bad("{\"a\": \"x\xff\"}", "invalid UTF-8"), "%s", ft_last_error());
    CHECK(bad("{\"a\": \"\xc0\xaf\"}", "invalid UTF-8"), "overlong: %s", ft_last_error());
    CHECK(bad("{\"a\": \"\xed\xa0\x80\"}", "invalid UTF-8"), "encoded surrogate: %s", ft_last_error());
    CHECK(bad("\"\\ud800\"", "unpaired surrogate"), "%s", ft_last_error());
    CHECK(bad("\"a\tb\"", "control character"), "%s", ft_last_error());
    CHECK(bad("\"abc", "unterminated"), "%s", ft_last_error());
    CHECK(bad("01", "unexpected text after"), "%s", ft_last_error());
    CHECK(bad("1.", "digits expected"), "%s", ft_last_error());
    CHECK(bad("tru", "invalid literal"), "%s", ft_last_error());
    CHECK(bad("{} {}", "unexpected text after"), "%s", ft_last_error());
    {
        char deep[300]; int i;
        for (i = 0; i < 100; i++) deep[i] = '[';
        deep[100] = 0;
        CHECK(bad(deep, "nesting deeper"), "%s", ft_last_error());
    }
    CHECK(bad("{\"a\": 1,\n \"b\": x}", "t.jsonl:7:"), "%s", ft_last_error());
}

TEST(jsonl_lines) {
    const char *path = "build/test_data.jsonl";
    FILE *f = fopen(path, "wb"); ft_jsonl *j; ft_json_doc *d; int n = 0, errors = 0; ft_result r;
    fputs("{\"text\": \"one\"}\n\n   \n{\"text\": \"two\"}\r\n{\"text\": broken}\n{\"text\": \"four\"}", f);
    fclose(f);
    CHECK_OK(ft_jsonl_open(&j, path));
    for (;;) {
        r = ft_jsonl_next(j, &d);
        if (r != FT_OK) {
            errors++;
            CHECK(strstr(ft_last_error(), "test_data.jsonl:5:10: unexpected character") != NULL, "%s", ft_last_error());
            continue;                                      /* skip the bad line */
        }
        if (!d) break;
        n++;
        ft_json_free(d);
    }
    CHECK(n == 3 && errors == 1 && ft_jsonl_line(j) == 6, "3 good lines, 1 bad, 6 lines (%d %d %lld)", n, errors, (long long)ft_jsonl_line(j));
    ft_jsonl_close(j);
    CHECK(ft_jsonl_open(&j, "build/nope.jsonl") == FT_ERR_IO && strstr(ft_last_error(), "nope.jsonl"), "missing file");
    remove(path);
}

int main(void) {
    RUN(json_values);
    RUN(json_errors_name_line_and_column);
    RUN(jsonl_lines);
    return ft_test_summary("test_data");
}
