/* test_dataset.c - JSONL datasets through SmolLM2's tokenizer and chat template: the ids equal
   tokenizing the whole rendered conversation, the loss covers exactly the assistant replies
   (with their end-of-turn marker), and malformed lines give file:line messages. */
#include "../finetune.h"
#include "ft_test.h"

static ft_tokenizer *T;
static char *TMPL;

static void write_file(const char *path, const char *text) { FILE *f = fopen(path, "wb"); fputs(text, f); fclose(f); }

/* the text of the ids with loss (or without) */
static void masked_text(const ft_example *e, int want, char *buf, int64_t cap) {
    int32_t ids[4096]; int64_t i, n = 0, len;
    for (i = 0; i < e->n; i++) if (e->loss[i] == want) ids[n++] = e->ids[i];
    len = ft_detokenize(T, ids, n, buf, cap, 1);
    buf[len >= 0 && len < cap ? len : 0] = 0;
}

TEST(instruction_data) {
    ft_dataset *d; const ft_example *e; char buf[4096], full[4096]; int32_t ids[4096]; int64_t n;
    ft_chat_msg m[2];
    write_file("build/ds_inst.jsonl",
               "{\"instruction\": \"Translate to French\", \"input\": \"cat\", \"output\": \"chat\"}\n"
               "{\"instruction\": \"Say hi\", \"output\": \"Hi!\\nBye.\"}\n");
    CHECK_OK(ft_dataset_load(&d, "build/ds_inst.jsonl", T, TMPL, NULL));
    if (!d) return;
    CHECK(ft_dataset_format(d) == FT_DATA_INSTRUCT && ft_dataset_size(d) == 2, "format %s", ft_data_format_name(ft_dataset_format(d)));
    e = ft_dataset_get(d, 0);
    m[0].role = "user"; m[0].content = "Translate to French\n\ncat"; m[1].role = "assistant"; m[1].content = "chat";
    ft_chat_apply(TMPL, m, 2, 0, full, sizeof full);
    n = ft_tokenize(T, full, -1, ids, 4096, 1, 1);
    CHECK(n == e->n && memcmp(ids, e->ids, (size_t)n * 4) == 0, "ids equal tokenizing the whole conversation (%lld vs %lld)", (long long)n, (long long)e->n);
    masked_text(e, 1, buf, sizeof buf);
    CHECK(strcmp(buf, "chat<|im_end|>\n") == 0, "loss on the reply: '%s'", buf);
    masked_text(e, 0, buf, sizeof buf);
    CHECK(strstr(buf, "You are a helpful AI assistant named SmolLM") && strstr(buf, "<|im_start|>assistant\n") && !strstr(buf, "chat<"), "no loss on the prompt: '%s'", buf);
    e = ft_dataset_get(d, 1);
    masked_text(e, 1, buf, sizeof buf);
    CHECK(strcmp(buf, "Hi!\nBye.<|im_end|>\n") == 0, "no input: '%s'", buf);
    ft_dataset_free(d);
}

TEST(chat_and_text_and_preference) {
    ft_dataset *d; const ft_example *e; char buf[4096];
    write_file("build/ds_chat.jsonl",
               "{\"messages\": [{\"role\": \"system\", \"content\": \"Be terse.\"}, {\"role\": \"user\", \"content\": \"2+2?\"},"
               " {\"role\": \"assistant\", \"content\": \"4\"}, {\"role\": \"user\", \"content\": \"3+3?\"}, {\"role\": \"assistant\", \"content\": \"6\"}]}\n");
    CHECK_OK(ft_dataset_load(&d, "build/ds_chat.jsonl", T, TMPL, NULL));
    if (d) {
        e = ft_dataset_get(d, 0);
        masked_text(e, 1, buf, sizeof buf);
        CHECK(strcmp(buf, "4<|im_end|>\n6<|im_end|>\n") == 0, "both assistant turns: '%s'", buf);
        masked_text(e, 0, buf, sizeof buf);
        CHECK(!strstr(buf, "SmolLM") && strstr(buf, "Be terse."), "its own system message, no default: '%s'", buf);
        ft_dataset_free(d);
    }
    write_file("build/ds_text.jsonl", "{\"text\": \"Once upon a time\"}\n");
    CHECK_OK(ft_dataset_load(&d, "build/ds_text.jsonl", T, TMPL, NULL));
    if (d) {
        e = ft_dataset_get(d, 0);
        CHECK(e->n == 5 && e->ids[4] == ft_tokenizer_eos(T) && e->loss[0] && e->loss[4], "text + EOS, loss everywhere (%lld)", (long long)e->n);
        ft_dataset_free(d);
    }
    write_file("build/ds_pref.jsonl",
               "{\"prompt\": \"Pick a color\", \"chosen\": \"Blue\", \"rejected\": \"I refuse\"}\n"
               "{\"prompt\": [{\"role\": \"user\", \"content\": \"Pick\"}], \"chosen\": [{\"role\": \"assistant\", \"content\": \"Red\"}], \"rejected\": \"No\"}\n");
    CHECK_OK(ft_dataset_load(&d, "build/ds_pref.jsonl", T, TMPL, NULL));
    if (d) {
        e = ft_dataset_get(d, 0);
        CHECK(ft_dataset_format(d) == FT_DATA_PREFERENCE && e->prompt_len > 0 && e->n > e->prompt_len && e->n2 > e->prompt_len, "pair");
        CHECK(memcmp(e->ids, e->ids2, (size_t)e->prompt_len * 4) == 0, "chosen and rejected share the prompt");
        masked_text(e, 1, buf, sizeof buf);
        CHECK(strcmp(buf, "Blue<|im_end|>\n") == 0, "chosen completion: '%s'", buf);
        CHECK(!e->loss[e->prompt_len - 1] && e->loss[e->prompt_len], "loss starts after the prompt");
        masked_text(ft_dataset_get(d, 1), 1, buf, sizeof buf);
        CHECK(strcmp(buf, "Red<|im_end|>\n") == 0, "message-list completion: '%s'", buf);
        ft_dataset_free(d);
    }
}

static void expect_error(const char *content, const char *expect, const ft_data_opts *o) {
    ft_dataset *d; ft_result r;
    write_file("build/ds_bad.jsonl", content);
    r = ft_dataset_load(&d, "build/ds_bad.jsonl", T, TMPL, o);
    CHECK(r != FT_OK && strstr(ft_last_error(), "ds_bad.jsonl:") && strstr(ft_last_error(), expect), "want '%s', got %s: %s", expect, ft_result_string(r), ft_last_error());
    if (r == FT_OK) ft_dataset_free(d);
}


TEST(split_and_mix) {
    ft_dataset *d, *ev, *g, *mix, *parts[2]; double ratios[2] = {0.9, 0.1}; int64_t i, from_g = 0;
    write_file("build/ds_mix_a.jsonl", "{\"instruction\": \"a\", \"output\": \"A\"}\n{\"instruction\": \"b\", \"output\": \"B\"}\n"
                                      "{\"instruction\": \"c\", \"output\": \"C\"}\n{\"instruction\": \"d\", \"output\": \"D\"}\n"
                                      "{\"instruction\": \"e\", \"output\": \"E\"}\n{\"instruction\": \"f\", \"output\": \"F\"}\n"
                                      "{\"instruction\": \"g\", \"output\": \"G\"}\n{\"instruction\": \"h\", \"output\": \"H\"}\n"
                                      "{\"instruction\": \"i\", \"output\": \"I\"}\n{\"instruction\": \"j\", \"output\": \"J\"}\n");
    write_file("build/ds_mix_g.jsonl", "{\"text\": \"General knowledge text.\"}\n{\"text\": \"More general text.\"}\n");
    CHECK_OK(ft_dataset_load(&d, "build/ds_mix_a.jsonl", T, TMPL, NULL));
    CHECK_OK(ft_dataset_load(&g, "build/ds_mix_g.jsonl", T, TMPL, NULL));
    if (!d || !g) return;
    CHECK_OK(ft_dataset_split(d, 0.2, 3, &ev));
    CHECK(ev && ft_dataset_size(d) == 8 && ft_dataset_size(ev) == 2, "8 + 2 (%lld, %lld)", (long long)ft_dataset_size(d), (long long)(ev ? ft_dataset_size(ev) : -1));
    parts[0] = d; parts[1] = g;
    CHECK_OK(ft_dataset_mix(&mix, parts, ratios, 2, 2000, 5));
    if (mix) {
        for (i = 0; i < ft_dataset_size(mix); i++) from_g += ft_dataset_get(mix, i)->loss[0];   /* text: loss from the first token */
        CHECK(ft_dataset_size(mix) == 2000 && from_g > 150 && from_g < 250, "about 10%% replay: %lld of 2000", (long long)from_g);
        ft_dataset_free(mix);
    }
    ft_dataset_free(d); ft_dataset_free(ev); ft_dataset_free(g);
}

TEST(malformed_lines) {
    ft_data_opts o; ft_dataset *d;
    expect_error("{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"a\" \"output\": \"b\"}\n", "ds_bad.jsonl:2:", NULL);
    expect_error("{\"instruction\": 5, \"output\": \"b\"}\n", "must be strings", NULL);
    expect_error("{\"instruction\": \"a\", \"output\": \"\"}\n", "\"output\" is empty", NULL);
    expect_error("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n", "no assistant message", NULL);
    expect_error("{\"messages\": [{\"role\": \"bot\", \"content\": \"hi\"}]}\n", "role \"bot\"", NULL);
    expect_error("{\"text\": \"caf\xe9\"}\n", "invalid UTF-8", NULL);
    expect_error("{\"prompt\": \"p\", \"chosen\": \"\", \"rejected\": \"r\"}\n", "\"chosen\" must be a non-empty string", NULL);
    expect_error("{\"prompt\": \"p\", \"completion\": \"c\", \"label\": \"yes\"}\n", "\"label\" must be true or false", NULL);
    expect_error("{\"foo\": 1}\n", "cannot tell the format", NULL);
    memset(&o, 0, sizeof o); o.max_len = 8; o.skip_long = 1;
    expect_error("{\"text\": \"one two three four five six seven eight nine ten\"}\n", "longer than max_len 8", &o);
    /* skip_bad: bad lines are logged and skipped, the rest is kept */
    memset(&o, 0, sizeof o); o.skip_bad = 1;
    write_file("build/ds_bad.jsonl", "{\"text\": \"fine\"}\n{broken\n{\"text\": 3}\n{\"text\": \"also fine\"}\n");
    CHECK_OK(ft_dataset_load(&d, "build/ds_bad.jsonl", T, TMPL, &o));
    if (d) { CHECK(ft_dataset_size(d) == 2 && ft_dataset_skipped(d) == 2, "kept 2, skipped 2"); ft_dataset_free(d); }
    /* truncation keeps the start */
    memset(&o, 0, sizeof o); o.max_len = 4;
    write_file("build/ds_bad.jsonl", "{\"text\": \"one two three four five six\"}\n");
    CHECK_OK(ft_dataset_load(&d, "build/ds_bad.jsonl", T, TMPL, &o));
    if (d) { CHECK(ft_dataset_get(d, 0)->n == 4 && ft_dataset_truncated(d) == 1, "truncated to 4"); ft_dataset_free(d); }
    CHECK(ft_dataset_load(&d, "build/nope.jsonl", T, TMPL, NULL) == FT_ERR_IO, "missing file");
}

int main(void) {
    ft_gguf *g; const char *path = getenv("FT_MODEL"); ft_gguf_str ts;
    if (!path || ft_gguf_open(&g, path) != FT_OK) { printf("FAIL - model: set FT_MODEL (tools/fetch-model): %s\n", ft_last_error()); return 1; }
    if (ft_tokenizer_from_gguf(&T, g) != FT_OK || !T || !ft_gguf_get_str(g, "tokenizer.chat_template", &ts)) { printf("FAIL - tokenizer: %s\n", ft_last_error()); return 1; }
    TMPL = (char *)malloc(ts.n + 1); memcpy(TMPL, ts.s, ts.n); TMPL[ts.n] = 0;
    RUN(instruction_data);
    RUN(chat_and_text_and_preference);
    RUN(split_and_mix);
    RUN(malformed_lines);
    ft_tokenizer_free(T); free(TMPL); ft_gguf_close(g);
    return ft_test_summary("test_dataset");
}
