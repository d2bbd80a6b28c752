/* test_mix.c - multi-task mixing: ft_mix_ratios (FLAN / T5 temperature sampling, rates
   min(n_i, cap)^(1/T) normalised) against the formula, and ft_dataset_mix at those rates: the
   mixture's composition (each example traced back to its task) matches the rates within sampling
   tolerance for T = 1 (examples-proportional), T = 2 and a cap. Three tiny instruction tasks read
   with SmolLM2's tokenizer (a tiny model that takes it, as test_pref.c). */
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

static const char *MODEL = "build/tiny_mix.gguf", *TASK[3] = {"build/mix_a.jsonl", "build/mix_b.jsonl", "build/mix_c.jsonl"};
static const int64_t SIZES[3] = {200, 50, 10};
static ft_model *model;
static ft_dataset *parts[3];

TEST(ratios_formula) {
    double r[3], want[3], s; int i;
    CHECK_OK(ft_mix_ratios(SIZES, 3, 1.0, 0, r));                 /* examples-proportional */
    for (i = 0; i < 3; i++) CHECK(fabs(r[i] - (double)SIZES[i] / 260.0) < 1e-12, "T=1: rate %d is %g", i, r[i]);
    CHECK_OK(ft_mix_ratios(SIZES, 3, 2.0, 0, r));                 /* sqrt(n) */
    s = sqrt(200.0) + sqrt(50.0) + sqrt(10.0);
    for (i = 0; i < 3; i++) CHECK(fabs(r[i] - sqrt((double)SIZES[i]) / s) < 1e-12, "T=2: rate %d is %g", i, r[i]);
    CHECK_OK(ft_mix_ratios(SIZES, 3, 1.0, 50, r));                /* T5's cap K: min(n, K) */
    want[0] = 50.0 / 110; want[1] = 50.0 / 110; want[2] = 10.0 / 110;
    for (i = 0; i < 3; i++) CHECK(fabs(r[i] - want[i]) < 1e-12, "cap 50: rate %d is %g, want %g", i, r[i], want[i]);
    CHECK_OK(ft_mix_ratios(SIZES, 3, 1e6, 0, r));                 /* T -> infinity: equal */
    for (i = 0; i < 3; i++) CHECK(fabs(r[i] - 1.0 / 3) < 1e-4, "T=1e6: rate %d is %g", i, r[i]);
    {   /* bad input is an error with a message, not an abort */
        int64_t bad[2] = {10, 0};
        CHECK(ft_mix_ratios(SIZES, 3, 0.0, 0, r) == FT_ERR_INVALID, "temperature 0 accepted");
        CHECK(ft_mix_ratios(SIZES, 0, 1.0, 0, r) == FT_ERR_INVALID, "no tasks accepted");
        CHECK(ft_mix_ratios(bad, 2, 1.0, 0, r) == FT_ERR_INVALID, "an empty task accepted");
        CHECK(strstr(ft_last_error(), "task 1") != NULL, "message: %s", ft_last_error());
    }
}

/* which task an example of the mixture came from (its token ids equal one of that task's) */
static int task_of(const ft_example *e) {
    int p; int64_t i;
    for (p = 0; p < 3; p++)
        for (i = 0; i < ft_dataset_size(parts[p]); i++) {
            const ft_example *x = ft_dataset_get(parts[p], i);
            if (x->n == e->n && memcmp(x->ids, e->ids, (size_t)e->n * sizeof(int32_t)) == 0) return p;
        }
    return -1;
}

static void composition(double temperature, double cap, const char *name) {
    double r[3]; int64_t count[3] = {0, 0, 0}, i, N = 6000, lost = 0; ft_dataset *mixed; int p;
    CHECK_OK(ft_mix_ratios(SIZES, 3, temperature, cap, r));
    CHECK_OK(ft_dataset_mix(&mixed, parts, r, 3, N, 7));
    if (!mixed) return;
    CHECK(ft_dataset_size(mixed) == N, "%s: %lld examples", name, (long long)ft_dataset_size(mixed));
    for (i = 0; i < ft_dataset_size(mixed); i++) {
        int t = task_of(ft_dataset_get(mixed, i));
        if (t < 0) lost++; else count[t]++;
    }
    CHECK(lost == 0, "%s: %lld examples from no task", name, (long long)lost);
    for (p = 0; p < 3; p++) {   /* 4.5 standard deviations of a binomial share */
        double share = (double)count[p] / (double)N, tol = 4.5 * sqrt(r[p] * (1 - r[p]) / (double)N);
        printf("    %-10s task %c: rate %.4f, share %.4f (+-%.4f)\n", name, 'a' + p, r[p], share, tol);
        CHECK(fabs(share - r[p]) < tol, "%s: task %d share %.4f, rate %.4f", name, p, share, r[p]);
    }
    ft_dataset_free(mixed);
}
TEST(mix_t1) { composition(1.0, 0, "T=1"); }
TEST(mix_t2) { composition(2.0, 0, "T=2"); }
TEST(mix_cap) { composition(1.0, 50, "T=1 K=50"); }
TEST(mix_t2_cap) { composition(2.0, 20, "T=2 K=20"); }

int main(void) {
    const char *src = getenv("FT_MODEL"); int p, i; FILE *f;
    static const char *verbs[3] = {"Reverse the word", "Spell the number", "Name the colour of"};
    if (!src || !tiny_model_write_vocab(MODEL, FT_TYPE_F32, 9, src)) { printf("FAIL - needs FT_MODEL (tools/fetch-model) for the tokenizer\n"); return 1; }
    for (p = 0; p < 3; p++) {
        if (!(f = fopen(TASK[p], "w"))) { printf("FAIL - cannot write %s\n", TASK[p]); return 1; }
        for (i = 0; i < SIZES[p]; i++)
            fprintf(f, "{\"instruction\": \"%s item %d of task %c.\", \"output\": \"Answer %d.\"}\n", verbs[p], i, 'a' + p, i);
        fclose(f);
    }
    if (ft_model_load(&model, MODEL, NULL) != FT_OK) { printf("FAIL - %s\n", ft_last_error()); return 1; }
    for (p = 0; p < 3; p++)
        if (ft_dataset_load(&parts[p], TASK[p], ft_model_tokenizer(model), ft_model_chat_template(model), NULL) != FT_OK) {
            printf("FAIL - %s\n", ft_last_error()); return 1;
        }
    RUN(ratios_formula);
    RUN(mix_t1);
    RUN(mix_t2);
    RUN(mix_cap);
    RUN(mix_t2_cap);
    for (p = 0; p < 3; p++) { ft_dataset_free(parts[p]); remove(TASK[p]); }
    ft_model_free(model); remove(MODEL);
    return ft_test_summary("test_mix");
}
