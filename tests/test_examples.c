/* test_examples.c - every program of examples/ runs to its end on a tiny model that carries
   SmolLM2's tokenizer (tiny_model.h; $FT_MODEL gives the tokenizer) and the project's example
   data, for one to three steps: exit status 0, the lines it is meant to print, the files it is
   meant to write; and a bad argument gives a message and a non-zero status. The binaries are
   found next to $FT_BIN (tests/run.sh: BUILD/ft), else in build/. They run in build/ex, where
   examples/ is a link to the project's, so their default data paths hold. Under make sanitize
   they are built with the sanitizers too, and leak-checked (each frees what it made); there the
   training runs are left out (02, 03, 04 and 06 take minutes on a 49k vocabulary under ASan;
   make test runs them) and 05 merges two adapters this test writes. */
#define _XOPEN_SOURCE 700              /* WEXITSTATUS, realpath */
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"
#include <sys/wait.h>

#if defined(__SANITIZE_ADDRESS__)
#define EX_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EX_SANITIZED 1
#endif
#endif
#ifndef EX_SANITIZED
#define EX_SANITIZED 0
#endif

static char *BIN;                      /* the directory of the example binaries, absolute        */
static char LOGTEXT[65536];            /* the last run's stdout and stderr                        */

/* runs `ENV BIN/NAME ARGS` in build/ex with one thread, its output into LOGTEXT; the exit status */
static int ex_run(const char *env, const char *name, const char *args) {
    char cmd[4096];
    size_t n = 0;
    FILE *f;
    snprintf(cmd, sizeof cmd, "cd build/ex && FT_THREADS=1 %s %s/%s %s >log.txt 2>&1", env, BIN, name, args);
    int st = system(cmd);
    LOGTEXT[0] = 0;
    if ((f = fopen("build/ex/log.txt", "rb"))) {
        n = fread(LOGTEXT, 1, sizeof LOGTEXT - 1, f);
        fclose(f);
    }
    LOGTEXT[n] = 0;
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}
static int said(const char *what) { return strstr(LOGTEXT, what) != NULL; }
static int made(const char *path) {
    char p[512];
    snprintf(p, sizeof p, "build/ex/%s", path);
    FILE *f = fopen(p, "rb");
    if (f) fclose(f);
    return f != NULL;
}
/* the first n lines of the project's file `from` into build/ex/`to`: a short held-out set */
static int head(const char *from, const char *to, int n) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "head -n %d %s > build/ex/%s", n, from, to);
    return system(cmd) == 0;
}

TEST(autograd_00) {
    float w[3] = {0, 0, 0};
    int rc = ex_run("", "00_autograd", "");
    const char *at = strstr(LOGTEXT, "w = ");
    int got = at ? sscanf(at, "w = %f %f %f", &w[0], &w[1], &w[2]) : 0;
    CHECK(rc == 0 && got == 3, "exit %d: %s", rc, LOGTEXT);
    CHECK(fabsf(w[0] - 2) < 0.01f && fabsf(w[1] + 1) < 0.01f && fabsf(w[2] - 0.5f) < 0.01f, "fits 2a - b + 0.5: %s", LOGTEXT);
}

TEST(generate_01) {
    int rc = ex_run("", "01_generate", "tiny.gguf \"What is 2 + 2?\" 8");
    CHECK(rc == 0 && strlen(LOGTEXT) > 1, "exit %d: %s", rc, LOGTEXT);
    rc = ex_run("", "01_generate", "no-such-model.gguf");
    CHECK(rc == 1 && said("no-such-model.gguf"), "a missing model is named: exit %d: %s", rc, LOGTEXT);
}

TEST(lora_sft_02) {
    int rc = ex_run("FT_STEPS=2", "02_lora_sft", "tiny.gguf");
    CHECK(rc == 0 && said("step 2/2  loss"), "exit %d: %s", rc, LOGTEXT);
    CHECK(made("adapter.gguf") && made("peft/adapter_config.json"), "the adapter for llama.cpp and PEFT: %s", LOGTEXT);
}

TEST(dpo_03) {
    int rc = ex_run("FT_STEPS=2", "03_dpo", "tiny.gguf dpo examples/data/dates_pref_train.jsonl pref_eval.jsonl");
    CHECK(rc == 0 && said("step 2/2") && said("rewards/chosen") && said("rewards/rejected") && said("rewards/accuracies") &&
          said("rewards/margins"), "TRL's metrics each step: exit %d: %s", rc, LOGTEXT);
    CHECK(said("dpo: held-out preference accuracy") && made("adapter_dpo.gguf"), "the evaluation and the adapter: %s", LOGTEXT);
    rc = ex_run("FT_STEPS=1", "03_dpo", "tiny.gguf orpo examples/data/dates_pref_train.jsonl pref_eval.jsonl");
    CHECK(rc == 0 && said("step 1/1") && said("orpo: held-out preference accuracy"), "a reference-free row: exit %d: %s", rc, LOGTEXT);
}

/* what the training examples say to a wrong command line, before they load anything */
TEST(bad_arguments) {
    int rc = ex_run("", "03_dpo", "tiny.gguf sft");
    CHECK(rc == 2 && said("sft: not a preference objective"), "exit %d: %s", rc, LOGTEXT);
    rc = ex_run("", "04_grpo", "");
    CHECK(rc == 2 && said("usage"), "exit %d: %s", rc, LOGTEXT);
    rc = ex_run("", "06_custom_objective", "");
    CHECK(rc == 2 && said("usage"), "exit %d: %s", rc, LOGTEXT);
}

TEST(grpo_04) {
    int rc = ex_run("FT_STEPS=2", "04_grpo", "tiny.gguf examples/data/arith_train.jsonl arith_eval.jsonl");
    CHECK(rc == 0 && said("before: mean reward") && said("step 2/2") && said("reward") && said("after:  mean reward"),
          "exit %d: %s", rc, LOGTEXT);
    CHECK(made("adapter_grpo.gguf"), "the adapter: %s", LOGTEXT);
}

/* a LoRA adapter of the tiny model with every parameter moved off its start, for 05 */
static int write_adapter(const char *path, uint64_t seed) {
    ft_model *m = NULL;
    ft_peft *p = NULL;
    ft_lora_opts lo = ft_lora_opts_default();
    lo.seed = seed;
    ft_result r = ft_model_load(&m, "build/ex/tiny.gguf", NULL);
    if (r == FT_OK) r = ft_lora_attach(&p, m, &lo);
    if (r == FT_OK) tiny_nudge(ft_peft_params(p), 0.01f * (float)seed);
    if (r == FT_OK) r = ft_peft_save(p, path, FT_FORMAT_LLAMACPP, NULL);
    ft_peft_free(p);
    ft_model_free(m);
    return r == FT_OK;
}
static void merge_05_on(const char *a, const char *b) {
    char args[512];
    ft_model *m = NULL;
    snprintf(args, sizeof args, "tiny.gguf %s %s", a, b);
    int rc = ex_run("", "05_merge", args);
    CHECK(rc == 0 && said("wrote merged.gguf") && said("as f16") && said("ties: ") && said("wrote ties.gguf"), "%s: exit %d: %s", args, rc, LOGTEXT);
    CHECK_OK(ft_model_load(&m, "build/ex/merged.gguf", NULL));
    ft_model_free(m);
    m = NULL;
    CHECK_OK(ft_model_load(&m, "build/ex/ties.gguf", NULL));
    ft_model_free(m);
}
TEST(merge_05) {
    CHECK(write_adapter("build/ex/lora_a.gguf", 1) && write_adapter("build/ex/lora_b.gguf", 2), "%s", ft_last_error());
    merge_05_on("lora_a.gguf", "lora_b.gguf");
    int rc = ex_run("", "05_merge", "tiny.gguf no-such-adapter.gguf");
    CHECK(rc == 1 && said("no-such-adapter.gguf"), "a missing adapter is named: exit %d: %s", rc, LOGTEXT);
}
/* the path through the examples: 02's adapter and 03's merged */
TEST(merge_05_of_02_and_03) { merge_05_on("adapter.gguf", "adapter_dpo.gguf"); }

TEST(custom_objective_06) {
    float first = 0, last = 0;
    int rc = ex_run("FT_STEPS=3", "06_custom_objective", "tiny.gguf");
    const char *at = strstr(LOGTEXT, "margin_dpo: loss ");
    int got = at ? sscanf(at, "margin_dpo: loss %f -> %f", &first, &last) : 0;
    CHECK(rc == 0 && said("objective margin_dpo") && said("step 3/3") && got == 2, "exit %d: %s", rc, LOGTEXT);
    CHECK(fabsf(first - 0.7444f) < 1e-3f, "log(1 + e^(beta margin)) at the start, the adapter off: %g", first);
    CHECK(last < first, "the loss falls: %g -> %g", first, last);
}

/* a method of your own: trains, and its file reads back only through the method (ft_peft_read) */
TEST(custom_peft_07) {
    float first = 0, last = 0;
    int rc = ex_run("FT_STEPS=3", "07_custom_peft", "tiny.gguf");
    const char *at = strstr(LOGTEXT, "lowrank_o_proj: loss ");
    int got = at ? sscanf(at, "lowrank_o_proj: loss %f -> %f", &first, &last) : 0;
    CHECK(rc == 0 && said("lowrank_o_proj: ") && said("trainable parameters") && said("step 3/3") && got == 2 && said("wrote adapter_custom.gguf"),
          "exit %d: %s", rc, LOGTEXT);
    CHECK(last < first, "the loss falls: %g -> %g", first, last);
}

static int exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* BIN: FT_BIN's directory, or build/, made absolute (the examples run in build/ex) */
static int find_bin(void) {
    char dir[1024] = "build";
    const char *ft = getenv("FT_BIN");
    if (ft && strrchr(ft, '/')) snprintf(dir, sizeof dir, "%.*s", (int)(strrchr(ft, '/') - ft), ft);
    BIN = realpath(dir, NULL);
    return BIN != NULL;
}

FT_TEST_MAIN(test_examples) {
    const char *vocab = getenv("FT_MODEL");
    const char *names[] = {"00_autograd", "01_generate", "02_lora_sft", "03_dpo", "04_grpo", "05_merge", "06_custom_objective", "07_custom_peft"};
    char path[2048];
    int i;
    if (!vocab || !exists(vocab)) {
        printf("    skipped: needs FT_MODEL (tools/fetch-model, for its tokenizer)\n");
        return ft_test_summary("test_examples");
    }
    if (!find_bin()) { printf("FAIL - no directory of example binaries (FT_BIN %s)\n", getenv("FT_BIN")); return 1; }
    for (i = 0; i < (int)(sizeof names / sizeof names[0]); i++) {
        snprintf(path, sizeof path, "%s/%s", BIN, names[i]);
        if (!exists(path)) { printf("FAIL - %s is missing: make examples\n", path); free(BIN); return 1; }
    }
    if (system("rm -rf build/ex && mkdir -p build/ex && ln -sfn \"$(pwd)/examples\" build/ex/examples") != 0) { free(BIN); return 1; }
    if (!tiny_model_write_vocab("build/ex/tiny.gguf", FT_TYPE_F32, 5, vocab)) { printf("FAIL - cannot write the tiny model\n"); free(BIN); return 1; }
    if (!head("examples/data/dates_pref_eval.jsonl", "pref_eval.jsonl", 8) || !head("examples/data/arith_eval.jsonl", "arith_eval.jsonl", 6)) {
        free(BIN);
        return 1;
    }
    RUN(autograd_00);
    RUN(generate_01);
    RUN(merge_05);
    RUN(bad_arguments);
    if (EX_SANITIZED) {
        printf("    under the sanitizers: 00, 01, 05 and bad arguments only (make test runs 02, 03, 04, 06, 07)\n");
    } else {
        RUN(lora_sft_02);
        RUN(dpo_03);
        RUN(grpo_04);
        RUN(merge_05_of_02_and_03);
        RUN(custom_objective_06);
        RUN(custom_peft_07);
    }
    free(BIN);
    return ft_test_summary("test_examples");
}
