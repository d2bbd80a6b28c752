/* test_pref.c - preference objectives end to end on a tiny model with SmolLM2's tokenizer:
   DPO (reference = the same model with the adapter off), IPO, hinge, robust DPO, SimPO, ORPO and
   KTO (unpaired feedback) each move the policy towards the chosen answers (loss down, margin > 0
   on the training batch and on held-out pairs); a reward model (LoRA + a scalar head) ranks
   held-out pairs. */
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

static const char *MODEL = "build/tiny_pref.gguf", *DATA = "build/pref.jsonl", *KTO = "build/kto.jsonl", *HELD = "build/pref_held.jsonl";

typedef struct { double first, last, margin, acc; } trace;
static int on_step(void *user, const ft_step_info *s) {
    trace *t = (trace *)user;
    if (s->step == 1) t->first = s->loss;
    t->last = s->loss; t->margin = s->pref.rewards_margins; t->acc = s->pref.rewards_accuracies;
    return 0;
}

static void run(ft_objective obj, const char *name) {
    ft_model *m; ft_peft *p; ft_ctx *ctx; ft_dataset *d; ft_lora_opts lo; ft_train_opts to; ft_ctx_opts co; trace t;
    CHECK_OK(ft_model_load(&m, MODEL, NULL));
    memset(&co, 0, sizeof co); co.n_threads = 2;
    ft_ctx_init(&ctx, &co);
    memset(&lo, 0, sizeof lo); lo.r = 8; lo.alpha = 16; lo.reward_head = obj == FT_OBJ_RM;
    ft_lora_attach(&p, m, &lo);
    CHECK_OK(ft_dataset_load(&d, obj == FT_OBJ_KTO ? KTO : DATA, ft_model_tokenizer(m), ft_model_chat_template(m), NULL));
    memset(&to, 0, sizeof to); memset(&t, 0, sizeof t);
    to.objective = obj; to.steps = 30; to.batch = 4; to.lr = 3e-3f; to.sched = FT_SCHED_CONSTANT; to.seed = 3;
    to.on_step = on_step; to.user = &t;
    if (obj == FT_OBJ_SIMPO) to.beta = 2.0f;
    if (obj == FT_OBJ_ROBUST) to.label_smoothing = 0.1f;
    CHECK_OK(ft_train(ctx, m, ft_peft_params(p), d, &to, NULL));
    printf("    %-6s loss %.4f -> %.4f, reward margin %.3f, accuracy %.2f\n", name, t.first, t.last, t.margin, t.acc);
    CHECK(t.last < t.first, "%s: loss did not go down", name);
    if (obj == FT_OBJ_KTO) CHECK(t.margin > 0, "%s: margin %.3f", name, t.margin);
    else CHECK(t.margin > 0 && t.acc >= 0.75, "%s: margin %.3f accuracy %.2f", name, t.margin, t.acc);
    {   /* held-out pairs (other colours, other wording): the implicit reward, or the reward head */
        ft_dataset *h; double acc = 0, mg = 0;
        CHECK_OK(ft_dataset_load(&h, HELD, ft_model_tokenizer(m), ft_model_chat_template(m), NULL));
        if (obj == FT_OBJ_RM) CHECK_OK(ft_eval_reward(ctx, m, h, 4, 64, &acc, &mg));
        else CHECK_OK(ft_eval_preference(ctx, m, h, 4, 64, to.beta > 0 ? to.beta : 0.1f, obj == FT_OBJ_SIMPO || obj == FT_OBJ_ORPO ? 2 : 1, &acc, &mg));
        printf("    %-6s held-out accuracy %.2f, margin %.3f\n", name, acc, mg);
        CHECK(acc >= 0.75 && mg > 0, "%s: held-out accuracy %.2f margin %.3f", name, acc, mg);
        ft_dataset_free(h);
    }
    ft_dataset_free(d); ft_peft_free(p); ft_ctx_free(ctx); ft_model_free(m);
}
TEST(dpo) { run(FT_OBJ_DPO, "dpo"); }
TEST(ipo) { run(FT_OBJ_IPO, "ipo"); }
TEST(hinge) { run(FT_OBJ_HINGE, "hinge"); }
TEST(simpo) { run(FT_OBJ_SIMPO, "simpo"); }
TEST(orpo) { run(FT_OBJ_ORPO, "orpo"); }
TEST(robust) { run(FT_OBJ_ROBUST, "robust"); }
TEST(kto) { run(FT_OBJ_KTO, "kto"); }
TEST(reward_model) { run(FT_OBJ_RM, "rm"); }

/* a zero SimPO gamma is zero in options from ft_train_opts_default, and the default (0.5) in
   zeroed ones: the first step's loss tells which ran */
static double simpo_first_loss(int from_default, float gamma) {
    ft_model *m; ft_peft *p; ft_ctx *ctx; ft_dataset *d; ft_lora_opts lo = ft_lora_opts_default(); ft_train_opts to; trace t;
    CHECK_OK(ft_model_load(&m, MODEL, NULL));
    ft_ctx_init(&ctx, NULL);
    ft_lora_attach(&p, m, &lo);
    CHECK_OK(ft_dataset_load(&d, DATA, ft_model_tokenizer(m), ft_model_chat_template(m), NULL));
    if (from_default) to = ft_train_opts_default(FT_OBJ_SIMPO);
    else { memset(&to, 0, sizeof to); to.objective = FT_OBJ_SIMPO; }
    memset(&t, 0, sizeof t);
    to.gamma = gamma; to.steps = 1; to.batch = 4; to.on_step = on_step; to.user = &t;
    CHECK_OK(ft_train(ctx, m, ft_peft_params(p), d, &to, NULL));
    ft_dataset_free(d); ft_peft_free(p); ft_ctx_free(ctx); ft_model_free(m);
    return t.first;
}
TEST(zero_is_a_choice) {
    double zero = simpo_first_loss(1, 0.0f), unset = simpo_first_loss(0, 0.0f), half = simpo_first_loss(1, 0.5f);
    printf("    simpo first loss: gamma 0 %.6f, unset %.6f, gamma 0.5 %.6f\n", zero, unset, half);
    CHECK(unset == half, "a zeroed option takes SimPO's gamma 0.5: %.6f vs %.6f", unset, half);
    CHECK(zero < half - 1e-3, "gamma 0 from the defaults runs with no margin: %.6f vs %.6f", zero, half);
}

/* KTO's batch: row B+i is prompt i followed by completion i-1 (mod B), loss on that completion */
TEST(kto_batch) {
    ft_model *m; ft_dataset *d; ft_batch_data bd; int64_t order[3] = {0, 1, 2}, B = 3, i, t;
    CHECK_OK(ft_model_load(&m, MODEL, NULL));
    CHECK_OK(ft_dataset_load(&d, KTO, ft_model_tokenizer(m), ft_model_chat_template(m), NULL));
    memset(&bd, 0, sizeof bd);
    CHECK_OK(ft_batch_build_kto(&bd, d, order, B, 512, 0));
    CHECK(bd.B == 2 * B, "rows %lld", (long long)bd.B);
    for (i = 0; i < B; i++) {
        const ft_example *e = ft_dataset_get(d, i), *o = ft_dataset_get(d, (i + B - 1) % B);
        const int32_t *row = bd.ids + (B + i) * bd.T, *tg = bd.targets + (B + i) * bd.T;
        int64_t c = o->n - o->prompt_len, bad = 0, nt = 0;
        CHECK(bd.label[i] == e->label, "label %lld", (long long)i);
        CHECK(bd.len[B + i] == e->prompt_len + c, "row %lld: length %d, want %lld", (long long)(B + i), bd.len[B + i], (long long)(e->prompt_len + c));
        for (t = 0; t < e->prompt_len; t++) bad += row[t] != e->ids[t];
        for (t = 0; t < c; t++) bad += row[e->prompt_len + t] != o->ids[o->prompt_len + t];
        for (t = 0; t < bd.T; t++) nt += tg[t] != -100;
        CHECK(bad == 0, "row %lld: %lld tokens differ from prompt %lld + completion %lld", (long long)(B + i), (long long)bad, (long long)i, (long long)((i + B - 1) % B));
        for (t = 0, c = 0; t < o->n; t++) c += o->loss[t];
        CHECK(nt == c, "row %lld: %lld targets, the completion has %lld", (long long)(B + i), (long long)nt, (long long)c);
    }
    ft_batch_data_free(&bd); ft_dataset_free(d); ft_model_free(m);
}

int main(void) {
    const char *src = getenv("FT_MODEL"); FILE *f; int i;
    static const char *colors[] = {"blue", "green", "red", "yellow", "purple", "orange", "white", "black"};
    if (!src || !tiny_model_write_vocab(MODEL, FT_TYPE_F32, 9, src)) { printf("FAIL - needs FT_MODEL (tools/fetch-model) for the tokenizer\n"); return 1; }
    f = fopen(DATA, "w");
    for (i = 0; i < 32; i++)    /* the preference: answer with the color, not a refusal */
        fprintf(f, "{\"prompt\": \"Name a color, number %d.\", \"chosen\": \"The color is %s.\", \"rejected\": \"I would rather not say.\"}\n", i, colors[i % 8]);
    fclose(f);
    f = fopen(KTO, "w");        /* the same feedback unpaired: good answers true, refusals false */
    for (i = 0; i < 32; i++) {
        if (i % 2 == 0) fprintf(f, "{\"prompt\": \"Name a color, number %d.\", \"completion\": \"The color is %s.\", \"label\": true}\n", i, colors[i % 8]);
        else fprintf(f, "{\"prompt\": \"Name a color, number %d.\", \"completion\": \"I would rather not say.\", \"label\": false}\n", i);
    }
    fclose(f);
    f = fopen(HELD, "w");
    for (i = 0; i < 8; i++)
        fprintf(f, "{\"prompt\": \"Tell me a color, please (%d).\", \"chosen\": \"The color is %s.\", \"rejected\": \"I would rather not say.\"}\n", i, colors[(i * 3) % 8]);
    fclose(f);
    RUN(dpo);
    RUN(zero_is_a_choice);
    RUN(ipo);
    RUN(hinge);
    RUN(simpo);
    RUN(orpo);
    RUN(robust);
    RUN(kto_batch);
    RUN(kto);
    RUN(reward_model);
    remove(MODEL); remove(DATA); remove(KTO); remove(HELD);
    return ft_test_summary("test_pref");
}
