/* 06_custom_objective.c - an objective of your own through the objective table: a copy of the dpo
   row with a new name and a new pairwise loss, built from the autograd ops, that ft_train runs like
   any other row (micro-batches, the reference policy, accumulation, clipping, AdamW). The loss is
   a margin DPO: the chosen answer has to beat the rejected one by a margin, not just win,
      loss = -logsigmoid(beta (z - margin)),  z = (chosen - ref_chosen) - (rejected - ref_rejected)
   with the margin taken from the row's gamma. Each step prints the loss, which falls.
   usage: build/06_custom_objective MODEL.gguf [train.jsonl]                   FT_STEPS=N: N steps
   build: make examples (links build/finetune.o, the implementation compiled once), or as one file:
   cc -O2 -march=native -I. -DFINETUNE_IMPLEMENTATION examples/06_custom_objective.c -o 06_custom_objective -lm -lpthread */
#include <stdio.h>
#include <stdlib.h>
#include "finetune.h"

/* the metrics TRL logs, from the log-ratios c and r (B each): the rewards are beta times them */
static void pair_metrics(ft_pref_stats *st, const ft_tensor *c, const ft_tensor *r, float beta) {
    int64_t n = ft_numel(c);
    double chosen = 0;
    double rejected = 0;
    double wins = 0;
    for (int64_t i = 0; i < n; i++) {
        chosen += beta * ((const float *)c->data)[i];
        rejected += beta * ((const float *)r->data)[i];
        wins += ((const float *)c->data)[i] > ((const float *)r->data)[i];
    }
    st->rewards_chosen = chosen / (double)n;
    st->rewards_rejected = rejected / (double)n;
    st->rewards_margins = (chosen - rejected) / (double)n;
    st->rewards_accuracies = wins / (double)n;
}

/* an ft_pair_loss_fn: lp holds (B) tensors of summed log-probs on the tape; returns the mean loss */
static ft_tensor *margin_dpo(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    ft_tensor *c = ft_sub(ctx, lp->chosen, lp->ref_chosen);           /* log pi/ref of the chosen */
    ft_tensor *r = ft_sub(ctx, lp->rejected, lp->ref_rejected);       /* ... and of the rejected  */
    ft_tensor *margin = ft_tensor_1d(ctx, 1);                         /* a constant: no gradient  */
    if (!c || !r || !margin) return NULL;                             /* the op's error is kept   */
    ((float *)margin->data)[0] = o->gamma;
    ft_tensor *x = ft_scale(ctx, ft_sub(ctx, ft_sub(ctx, c, r), margin), o->beta);   /* broadcasts */
    if (st) pair_metrics(st, c, r, o->beta);
    return ft_mean(ctx, ft_scale(ctx, ft_logsigmoid(ctx, x), -1.0f));
}

static int progress(void *user, const ft_step_info *s) {
    double *first_last = user;                                   /* the first and the last loss */
    if (s->step == 1) first_last[0] = s->loss;
    first_last[1] = s->loss;
    printf("step %lld/%lld  loss %.4f  rewards/margins %+.3f  rewards/accuracies %.2f\n", (long long)s->step,
           (long long)s->steps, s->loss, s->pref.rewards_margins, s->pref.rewards_accuracies);
    return 0;
}

int main(int argc, char **argv) {
    const char *train_path = argc > 2 ? argv[2] : "examples/data/dates_pref_train.jsonl";
    const char *steps = getenv("FT_STEPS");
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [train.jsonl]\n", argv[0]);
        return 2;
    }
    ft_objective_def row = *ft_objective_get(FT_OBJ_DPO);       /* pairs, the reference, beta 0.1 */
    row.name = "margin_dpo";
    row.about = "DPO with a margin: -logsig(beta (z - gamma))";
    row.gamma = 1.0f;                                            /* the margin, in nats */
    row.pair_loss = margin_dpo;
    ft_train_opts to = ft_train_opts_default(FT_OBJ_DPO);
    to.custom = &row;
    to.gamma = row.gamma;
    to.steps = steps ? atoll(steps) : 25;
    to.lr = 5e-4f;
    to.on_step = progress;
    double first_last[2] = {0, 0};
    to.user = first_last;
    ft_model *m = NULL;
    ft_ctx *ctx = NULL;
    ft_peft *lora = NULL;
    ft_dataset *train = NULL;
    ft_lora_opts lo = ft_lora_opts_default();
    ft_result r = ft_model_load(&m, argv[1], NULL);
    if (r == FT_OK) r = ft_ctx_init(&ctx, NULL);
    if (r == FT_OK) r = ft_lora_attach(&lora, m, &lo);
    if (r == FT_OK) r = ft_dataset_load(&train, train_path, ft_model_tokenizer(m), ft_model_chat_template(m), NULL);
    if (r == FT_OK) printf("objective %s: %s\n", row.name, row.about);
    if (r == FT_OK) r = ft_train(ctx, m, ft_peft_params(lora), train, &to, NULL);
    if (r == FT_OK) printf("%s: loss %.4f -> %.4f\n", row.name, first_last[0], first_last[1]);
    if (r != FT_OK) fprintf(stderr, "error: %s\n", ft_last_error());
    ft_dataset_free(train);
    ft_peft_free(lora);
    ft_ctx_free(ctx);
    ft_model_free(m);
    return r == FT_OK ? 0 : 1;
}
