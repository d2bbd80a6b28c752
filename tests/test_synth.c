/* test_synth.c - synthetic data ([synth]): ROUGE-L against rouge_score, the instruction and answer
   filters (each rejection reason), the numbered-list parser on model-like outputs, and the two
   pipelines on a tiny random model with SmolLM2's tokenizer: stats add up, output lines are valid
   JSONL, and a run resumes (3 lines, then to 5: 5 lines, the first 3 unchanged, no duplicates). */
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

static const char *MODEL = "build/tiny_synth.gguf", *SEEDS = "examples/data/seed_tasks.jsonl",
                  *OUT = "build/synth_out.jsonl", *OUT2 = "build/synth_si.jsonl", *BAD = "build/synth_bad.jsonl";

/* rougeL fmeasure from rouge-score 0.1.2 (PyPI), default tokenizer: tools/ref/rouge_fixtures.py */
static const struct { const char *a, *b; double f; } ROUGE[] = {
    {"Write a short poem about the sea.", "Write a short poem about the ocean.", 0.8571428571428571},
    {"Give three tips for staying healthy.", "What are three tips for staying healthy?", 0.76923076923076916},
    {"Translate 'good morning' into French.", "Sort these numbers: 5, 2, 9.", 0},
    {"The cat sat on the mat", "the mat sat on the cat", 0.66666666666666663},
    {"Explain photosynthesis", "explain PHOTOSYNTHESIS!!!", 1},
    {"", "anything at all", 0},
    {"!!! ...", "no tokens on the left", 0},
    {"Café au lait, s'il vous plaît", "cafe au lait sil vous plait", 0.42857142857142855},
    {"a b c d e f g", "a x c y e z g", 0.5714285714285714},
    {"Rewrite the sentence in passive voice: The dog chased the ball.", "Rewrite the following sentence in the passive voice and keep it under ten words: The dog chased the ball.", 0.73333333333333339},
    {"İstanbul is a city", "i stanbul is a city", 1},
    {"3.14 is pi; 2,718 is e", "pi is 3 14 and e is 2 718", 0.58823529411764708},
};

TEST(rouge_l_matches_rouge_score) {
    size_t i; double worst = 0;
    for (i = 0; i < sizeof ROUGE / sizeof *ROUGE; i++) {
        double f = ft_rouge_l(ROUGE[i].a, ROUGE[i].b), g = ft_rouge_l(ROUGE[i].b, ROUGE[i].a);
        CHECK(fabs(f - ROUGE[i].f) < 1e-12, "pair %d: %.17g, rouge_score %.17g", (int)i, f, ROUGE[i].f);
        CHECK(fabs(g - ROUGE[i].f) < 1e-12, "pair %d reversed: %.17g", (int)i, g);
        if (fabs(f - ROUGE[i].f) > worst) worst = fabs(f - ROUGE[i].f);
    }
    printf("# %d pairs, max |diff| %.3g\n", (int)(sizeof ROUGE / sizeof *ROUGE), worst);
}

TEST(instruction_filters) {
    static const char *pool[] = {"Write a short poem about the sea.", "What is the capital of Japan?",
                                 "Rewrite the sentence in passive voice: The dog chased the ball."};
    ft_synth_opts o; char long_text[2000]; int i; double mr;
    memset(&o, 0, sizeof o);
    CHECK(ft_synth_check_instruction("", NULL, pool, 3, &o, NULL) == FT_SYNTH_FORMAT, "empty");
    CHECK(ft_synth_check_instruction("...", NULL, pool, 3, &o, NULL) == FT_SYNTH_FORMAT, "punctuation only");
    CHECK(ft_synth_check_instruction("2. 1. 2.", NULL, pool, 3, &o, NULL) == FT_SYNTH_FORMAT, "no letter");
    CHECK(ft_synth_check_instruction("- List the planets of the solar system.", NULL, pool, 3, &o, NULL) == FT_SYNTH_FORMAT, "starts with punctuation");
    CHECK(ft_synth_check_instruction("\xc2\xbfQu\xc3\xa9 hora es ahora?", NULL, pool, 3, &o, NULL) == FT_SYNTH_FORMAT, "starts non-ASCII");
    CHECK(ft_synth_check_instruction("Explain gravity.", NULL, pool, 3, &o, NULL) == FT_SYNTH_TOO_SHORT, "2 words");
    for (long_text[0] = 0, i = 0; i < 151; i++) strcat(long_text, i ? " word" : "Word");
    CHECK(ft_synth_check_instruction(long_text, NULL, pool, 3, &o, NULL) == FT_SYNTH_TOO_LONG, "151 words");
    o.max_words = 200;
    CHECK(ft_synth_check_instruction(long_text, NULL, pool, 3, &o, NULL) != FT_SYNTH_TOO_LONG, "max_words 200");
    o.max_words = 0;
    CHECK(ft_synth_check_instruction("Describe the image below in detail.", NULL, pool, 3, &o, NULL) == FT_SYNTH_KEYWORD, "image");
    CHECK(ft_synth_check_instruction("Go to the shop and report the prices.", NULL, pool, 3, &o, NULL) == FT_SYNTH_KEYWORD, "go to");
    CHECK(ft_synth_check_instruction("Describe the imagery in this poem.", NULL, pool, 3, &o, NULL) == FT_SYNTH_KEPT, "imagery is not image");
    CHECK(ft_synth_check_instruction("What is the capital of Japan", NULL, pool, 3, &o, NULL) == FT_SYNTH_DUPLICATE, "same words");
    CHECK(ft_synth_check_instruction("Write a short poem about the ocean.", NULL, pool, 3, &o, &mr) == FT_SYNTH_SIMILAR, "rouge 0.857");
    CHECK(fabs(mr - 0.8571428571428571) < 1e-12, "max rouge %g", mr);
    o.rouge = 0.9f;
    CHECK(ft_synth_check_instruction("Write a short poem about the ocean.", NULL, pool, 3, &o, NULL) == FT_SYNTH_KEPT, "threshold 0.9");
    o.rouge = 0;
    CHECK(ft_synth_check_instruction("Name three animals that live in the desert.", NULL, pool, 3, &o, NULL) == FT_SYNTH_KEPT, "new task");
    /* evolution: against its original */
    CHECK(ft_synth_check_instruction("Here is the rewritten task: add 17 and 25 and explain each step.", "Add the two numbers.", pool, 3, &o, NULL) == FT_SYNTH_COPIED, "copied words");
    CHECK(ft_synth_check_instruction("The task is to add 17 and 25 step by step.", "Add the two numbers.", pool, 3, &o, NULL) == FT_SYNTH_COPIED, "talks about the task");
    CHECK(ft_synth_check_instruction("Add the two numbers, and give the result!", "Add the two numbers and give the result.", pool, 3, &o, NULL) == FT_SYNTH_NO_NEW_INFO, "no new information");
    CHECK(ft_synth_check_instruction("Rewrite the following sentence in the passive voice and keep it under ten words: The dog chased the ball.",
                                     pool[2], pool, 3, &o, NULL) == FT_SYNTH_KEPT, "the original (in the pool) is not a similarity match");
    CHECK(ft_synth_check_instruction("Rewrite the following sentence in the passive voice and keep it under ten words: The dog chased the ball.",
                                     NULL, pool, 3, &o, NULL) == FT_SYNTH_SIMILAR, "without the original it is");
    {
        static const char *bl[] = {"poem"};
        o.blacklist = bl; o.n_blacklist = 1;
        CHECK(ft_synth_check_instruction("Write a poem about trains and rivers.", NULL, NULL, 0, &o, NULL) == FT_SYNTH_KEYWORD, "own blacklist");
        CHECK(ft_synth_check_instruction("Describe the image of a train.", NULL, NULL, 0, &o, NULL) == FT_SYNTH_KEPT, "own blacklist replaces the default");
        o.blacklist = NULL; o.n_blacklist = 0;
    }
}

TEST(answer_filters) {
    ft_synth_opts o; memset(&o, 0, sizeof o);
    CHECK(ft_synth_check_answer("", NULL, &o) == FT_SYNTH_BAD_ANSWER, "empty");
    CHECK(ft_synth_check_answer(" ... !", NULL, &o) == FT_SYNTH_BAD_ANSWER, "no letters");
    CHECK(ft_synth_check_answer("Sorry, I cannot help with that.", NULL, &o) == FT_SYNTH_BAD_ANSWER, "sorry, short");
    CHECK(ft_synth_check_answer("Tokyo.", NULL, &o) == FT_SYNTH_KEPT, "one word");
    o.min_answer_words = 3;
    CHECK(ft_synth_check_answer("Tokyo.", NULL, &o) == FT_SYNTH_BAD_ANSWER, "min_answer_words 3");
    CHECK(ft_synth_check_answer("The capital is Tokyo.", NULL, &o) == FT_SYNTH_KEPT, "4 words");
    CHECK(ft_synth_check_answer("A habit is a routine.", "a habit is a routine", &o) == FT_SYNTH_BAD_ANSWER, "echo of the instruction");
    CHECK(ft_synth_check_answer("A habit is a routine you keep.", "a habit is a routine", &o) == FT_SYNTH_KEPT, "more than an echo");
}

TEST(list_parser) {
    char *it[8]; int n;
    n = ft_synth_parse_list(" Write a limerick about a cat.\n6. Name three planets.\n7. Explain how rain forms.", 5, 0, it, 8);
    CHECK(n == 3, "%d items", n);
    if (n == 3) {
        CHECK(!strcmp(it[0], "Write a limerick about a cat."), "'%s'", it[0]);
        CHECK(!strcmp(it[1], "Name three planets."), "'%s'", it[1]);
        CHECK(!strcmp(it[2], "Explain how rain forms."), "'%s'", it[2]);
    }
    ft_synth_texts_free(it, n);
    n = ft_synth_parse_list(" Write a limerick about a cat.\n6. Name three planets.\n7. Explain how rain", 5, 1, it, 8);
    CHECK(n == 2, "truncated: %d items (the cut one dropped)", n);
    ft_synth_texts_free(it, n);
    n = ft_synth_parse_list(" Describe a sunset.\n6) \"Give an example of a noun.\"\n\nHere are some more ideas:\n8. Junk that was cut", 5, 1, it, 8);
    CHECK(n == 2, "unnumbered line ends the list: %d items", n);
    if (n == 2) CHECK(!strcmp(it[1], "Give an example of a noun."), "quotes removed: '%s'", it[1]);
    ft_synth_texts_free(it, n);
    n = ft_synth_parse_list("\n5. **List two colors.**\n  6.Tell a joke about dogs.\n", 5, 0, it, 8);
    CHECK(n == 2, "leading newline, repeated number: %d items", n);
    if (n == 2) { CHECK(!strcmp(it[0], "List two colors."), "bold removed: '%s'", it[0]); CHECK(!strcmp(it[1], "Tell a joke about dogs."), "'%s'", it[1]); }
    ft_synth_texts_free(it, n);
    n = ft_synth_parse_list(" A.\n6. B.\n7. C.", 5, 1, it, 2);
    CHECK(n == 2, "cap 2: %d items", n);
    ft_synth_texts_free(it, n);
    n = ft_synth_parse_list("", 5, 0, it, 8);
    CHECK(n == 0, "empty: %d", n);
}

static char *str_dup(const char *s) { char *d = (char *)malloc(strlen(s) + 1); strcpy(d, s); return d; }
static int64_t count_lines(const char *path, char ***ins) {   /* and checks every line parses */
    ft_jsonl *f; ft_json_doc *d; int64_t n = 0;
    *ins = NULL;
    if (ft_jsonl_open(&f, path) != FT_OK) return -1;
    for (;;) {
        const ft_json *v;
        if (ft_jsonl_next(f, &d) != FT_OK) { n = -1; break; }
        if (!d) break;
        v = ft_json_get(ft_json_root(d), "instruction");
        *ins = (char **)realloc(*ins, sizeof(char *) * (size_t)(n + 1));
        (*ins)[n++] = str_dup(v && v->kind == FT_JSON_STRING ? v->s : "");
        if (!ft_json_get(ft_json_root(d), "output") || !ft_json_get(ft_json_root(d), "input")) n = -1000;
        ft_json_free(d);
    }
    ft_jsonl_close(f);
    return n;
}
static void free_lines(char **s, int64_t n) { int64_t i; for (i = 0; i < n; i++) free(s[i]); free(s); }
static int64_t rejected_sum(const ft_synth_stats *st) { int64_t s = 0; int k; for (k = 1; k < FT_SYNTH_REASON_COUNT; k++) s += st->rejected[k]; return s; }

static ft_model *M; static ft_ctx *CTX;

TEST(generate_batch) {
    const char *user[3] = {"Say hello.", "Name a color.", "Count to three."}; char *out[3]; int tr[3]; ft_rng r;
    ft_sample_opts s; memset(&s, 0, sizeof s);
    ft_rng_seed(&r, 1);
    CHECK_OK(ft_synth_generate(CTX, M, 3, user, NULL, NULL, 8, &s, &r, out, tr));
    CHECK(out[0] && out[1] && out[2], "texts");
    ft_synth_texts_free(out, 3);
    CHECK(ft_synth_generate(CTX, M, 0, user, NULL, NULL, 8, &s, &r, out, tr) == FT_ERR_INVALID, "n = 0");
}

TEST(evol_resume) {
    ft_synth_opts o; ft_synth_stats st; char **a, **b; int64_t na, nb, i, j;
    memset(&o, 0, sizeof o);
    o.method = FT_SYNTH_EVOL_INSTRUCT; o.n = 3; o.batch = 2; o.max_new = 16; o.max_new_answer = 8; o.seed = 5;
    o.sample.temperature = 1.0f;
    remove(OUT);
    CHECK_OK(ft_synth_evol_instruct(CTX, M, SEEDS, OUT, &o, &st));
    na = count_lines(OUT, &a);
    CHECK(na == 3, "%lld lines after the first run", (long long)na);
    CHECK(st.kept == 3 && st.resumed == 0, "kept %lld resumed %lld", (long long)st.kept, (long long)st.resumed);
    CHECK(st.generated == st.kept + rejected_sum(&st), "generated %lld = kept %lld + rejected %lld", (long long)st.generated, (long long)st.kept, (long long)rejected_sum(&st));
    o.n = 5;
    CHECK_OK(ft_synth_evol_instruct(CTX, M, SEEDS, OUT, &o, &st));
    nb = count_lines(OUT, &b);
    CHECK(nb == 5, "%lld lines after the resumed run", (long long)nb);
    CHECK(st.resumed == 3 && st.kept == 2, "resumed %lld kept %lld", (long long)st.resumed, (long long)st.kept);
    for (i = 0; i < na && i < nb; i++) CHECK(!strcmp(a[i], b[i]), "line %lld changed", (long long)i);
    for (i = 0; i < nb; i++) for (j = i + 1; j < nb; j++) CHECK(strcmp(b[i], b[j]), "lines %lld and %lld are the same instruction", (long long)i, (long long)j);
    CHECK_OK(ft_synth_evol_instruct(CTX, M, SEEDS, OUT, &o, &st));          /* complete: nothing to do */
    CHECK(st.kept == 0 && st.generated == 0 && st.resumed == 5, "kept %lld generated %lld", (long long)st.kept, (long long)st.generated);
    free_lines(a, na > 0 ? na : 0); free_lines(b, nb > 0 ? nb : 0);
}

TEST(self_instruct_runs) {
    ft_synth_opts o; ft_synth_stats st; char **a; int64_t na;
    memset(&o, 0, sizeof o);
    o.n = 3; o.batch = 3; o.max_new = 24; o.max_new_answer = 8; o.seed = 7; o.sample.temperature = 1.0f;
    o.max_generated = 30;
    remove(OUT2);
    CHECK_OK(ft_synth_self_instruct(CTX, M, SEEDS, OUT2, &o, &st));
    na = count_lines(OUT2, &a);
    CHECK(na == st.kept, "%lld lines, kept %lld", (long long)na, (long long)st.kept);
    CHECK(st.kept == 3 || st.stopped, "kept %lld, stopped %d", (long long)st.kept, st.stopped);
    CHECK(st.generated == st.kept + rejected_sum(&st), "generated %lld = kept %lld + rejected %lld", (long long)st.generated, (long long)st.kept, (long long)rejected_sum(&st));
    printf("# self-instruct on the random tiny model: %lld calls, generated %lld, kept %lld, stopped %d\n",
           (long long)st.calls, (long long)st.generated, (long long)st.kept, st.stopped);
    free_lines(a, na > 0 ? na : 0);
}

TEST(errors_name_file_and_line) {
    ft_synth_opts o; ft_synth_stats st; FILE *f = fopen(BAD, "w");
    memset(&o, 0, sizeof o); o.n = 2;
    fputs("{\"instruction\": \"ok\", \"input\": \"\", \"output\": \"x\"}\n{\"instruction\": 3}\n", f); fclose(f);
    CHECK(ft_synth_evol_instruct(CTX, M, SEEDS, BAD, &o, &st) == FT_ERR_FORMAT, "bad output line");
    CHECK(strstr(ft_last_error(), "synth_bad.jsonl:2") != NULL, "message: %s", ft_last_error());
    CHECK(ft_synth_evol_instruct(CTX, M, "build/no_such_seeds.jsonl", OUT, &o, &st) == FT_ERR_IO, "missing seeds: %s", ft_last_error());
    CHECK(ft_synth_evol_instruct(CTX, M, BAD, OUT, &o, &st) == FT_ERR_FORMAT, "a seed without a string instruction");
    CHECK(strstr(ft_last_error(), ":2") != NULL, "message: %s", ft_last_error());
    o.n = 0;
    CHECK(ft_synth_self_instruct(CTX, M, SEEDS, OUT, &o, &st) == FT_ERR_INVALID, "n = 0");
}

int main(void) {
    const char *src = getenv("FT_MODEL"); ft_ctx_opts co;
    RUN(rouge_l_matches_rouge_score);
    RUN(instruction_filters);
    RUN(answer_filters);
    RUN(list_parser);
    if (!src || !tiny_model_write_vocab(MODEL, FT_TYPE_F32, 11, src)) { printf("FAIL - needs FT_MODEL (tools/fetch-model) for the tokenizer\n"); return 1; }
    if (ft_model_load(&M, MODEL, NULL) != FT_OK) { printf("FAIL - load: %s\n", ft_last_error()); return 1; }
    memset(&co, 0, sizeof co); co.n_threads = 2;
    if (ft_ctx_init(&CTX, &co) != FT_OK) { printf("FAIL - ctx: %s\n", ft_last_error()); return 1; }
    RUN(generate_batch);
    RUN(evol_resume);
    RUN(self_instruct_runs);
    RUN(errors_name_file_and_line);
    ft_ctx_free(CTX); ft_model_free(M);
    return ft_test_summary("test_synth");
}
