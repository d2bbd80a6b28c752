/* test_pref.c - preference objectives end to end on a tiny model with SmolLM2's tokenizer:
   DPO (reference = the same model with the adapter off), IPO, hinge, SimPO and ORPO each move
   the policy towards the chosen answers (implicit reward margin > 0, loss down). */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

static const char *MODEL = "build/tiny_pref.gguf", *DATA = "build/pref.jsonl";

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
    memset(&lo, 0, sizeof lo); lo.r = 8; lo.alpha = 16;
    ft_lora_attach(&p, m, &lo);
    CHECK_OK(ft_dataset_load(&d, DATA, ft_model_tokenizer(m), ft_model_chat_template(m), NULL));
    memset(&to, 0, sizeof to); memset(&t, 0, sizeof t);
    to.objective = obj; to.steps = 30; to.batch = 4; to.lr = 3e-3f; to.sched = FT_SCHED_CONSTANT; to.seed = 3;
    to.on_step = on_step; to.user = &t;
    if (obj == FT_OBJ_SIMPO) to.beta = 2.0f;
    CHECK_OK(ft_train(ctx, m, ft_peft_params(p), d, &to, NULL));
    printf("    %-6s loss %.4f -> %.4f, reward margin %.3f, accuracy %.2f\n", name, t.first, t.last, t.margin, t.acc);
    CHECK(t.last < t.first, "%s: loss did not go down", name);
    CHECK(t.margin > 0 && t.acc >= 0.75, "%s: margin %.3f accuracy %.2f", name, t.margin, t.acc);
    ft_dataset_free(d); ft_peft_free(p); ft_ctx_free(ctx); ft_model_free(m);
}
TEST(dpo) { run(FT_OBJ_DPO, "dpo"); }
TEST(ipo) { run(FT_OBJ_IPO, "ipo"); }
TEST(hinge) { run(FT_OBJ_HINGE, "hinge"); }
TEST(simpo) { run(FT_OBJ_SIMPO, "simpo"); }
TEST(orpo) { run(FT_OBJ_ORPO, "orpo"); }

int main(void) {
    const char *src = getenv("FT_MODEL"); FILE *f; int i;
    static const char *colors[] = {"blue", "green", "red", "yellow", "purple", "orange", "white", "black"};
    if (!src || !tiny_model_write_vocab(MODEL, FT_TYPE_F32, 9, src)) { printf("FAIL - needs FT_MODEL (tools/fetch-model) for the tokenizer\n"); return 1; }
    f = fopen(DATA, "w");
    for (i = 0; i < 32; i++)    /* the preference: answer with the color, not a refusal */
        fprintf(f, "{\"prompt\": \"Name a color, number %d.\", \"chosen\": \"The color is %s.\", \"rejected\": \"I would rather not say.\"}\n", i, colors[i % 8]);
    fclose(f);
    RUN(dpo);
    RUN(ipo);
    RUN(hinge);
    RUN(simpo);
    RUN(orpo);
    remove(MODEL); remove(DATA);
    return ft_test_summary("test_pref");
}
