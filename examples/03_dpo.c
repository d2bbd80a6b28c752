/* 03_dpo.c - preference alignment: a LoRA adapter learns to prefer the "chosen" answer of each pair
   over the "rejected" one. The reference policy is the same model with the adapter switched off.
   The objective is any row of the objective table, by name: dpo (default), ipo, hinge, robust,
   apo_zero, discopop, simpo, orpo, ... (kto too, on KTO data). Each step prints the metrics TRL
   logs; at the end, the held-out share of pairs whose chosen answer gets the higher implicit reward.
   usage: build/03_dpo MODEL.gguf [OBJECTIVE [train.jsonl [eval.jsonl]]]      FT_STEPS=N: N steps
   data:  {"prompt": ..., "chosen": ..., "rejected": ...} per line (examples/data/dates_pref_*.jsonl)
   build: make examples (links build/finetune.o, the implementation compiled once), or as one file:
   cc -O2 -march=native -I. -DFINETUNE_IMPLEMENTATION examples/03_dpo.c -o 03_dpo -lm -lpthread */
#include <stdio.h>
#include <stdlib.h>
#include "finetune.h"

static int progress(void *user, const ft_step_info *s) {
    (void)user;
    printf("step %lld/%lld  loss %.4f  rewards/chosen %+.3f  rewards/rejected %+.3f  rewards/accuracies %.2f  rewards/margins %+.3f\n",
           (long long)s->step, (long long)s->steps, s->loss, s->pref.rewards_chosen, s->pref.rewards_rejected,
           s->pref.rewards_accuracies, s->pref.rewards_margins);
    return 0;
}

/* train with the objective's defaults (beta, label smoothing, ...), then evaluate on held-out pairs */
static ft_result align(ft_ctx *ctx, ft_model *m, ft_peft *lora, ft_objective obj, ft_dataset *train, ft_dataset *eval) {
    const ft_objective_def *def = ft_objective_get(obj);
    const char *steps = getenv("FT_STEPS");
    ft_train_opts to = ft_train_opts_default(obj);
    double accuracy = 0;
    double margin = 0;
    to.steps = steps ? atoll(steps) : 25;
    to.lr = 5e-4f;                                  /* LoRA takes a larger rate than TRL's 5e-7..5e-5 */
    to.on_step = progress;
    ft_result r = ft_train(ctx, m, ft_peft_params(lora), train, &to, NULL);
    /* DPO's implicit reward: beta log(pi / ref); SimPO's and ORPO's (no reference): beta mean log pi */
    if (r == FT_OK) r = ft_eval_preference(ctx, m, eval, to.batch, to.seq_len, to.beta, def->reference ? 1 : 2, &accuracy, &margin);
    if (r == FT_OK) printf("%s: held-out preference accuracy %.0f%%, mean margin %+.3f\n", def->name, 100 * accuracy, margin);
    return r;
}

int main(int argc, char **argv) {
    const char *name = argc > 2 ? argv[2] : "dpo";
    ft_objective obj = FT_OBJ_DPO;
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [dpo|ipo|hinge|apo_zero|discopop|simpo|orpo|kto|... [train.jsonl [eval.jsonl]]]\n", argv[0]);
        return 2;
    }
    if (!ft_objective_parse(name, &obj) || (ft_objective_get(obj)->kind != FT_KIND_PAIRS && obj != FT_OBJ_KTO)) {
        fprintf(stderr, "%s: not a preference objective (dpo, ipo, hinge, apo_zero, discopop, simpo, orpo, kto, ...)\n", name);
        return 2;
    }
    const char *pairs = obj == FT_OBJ_KTO ? "examples/data/dates_kto_train.jsonl" : "examples/data/dates_pref_train.jsonl";
    const char *train_path = argc > 3 ? argv[3] : pairs;
    const char *eval_path = argc > 4 ? argv[4] : "examples/data/dates_pref_eval.jsonl";
    char out[256];
    snprintf(out, sizeof out, "adapter_%s.gguf", name);
    ft_model *m = NULL;
    ft_ctx *ctx = NULL;
    ft_peft *lora = NULL;
    ft_dataset *train = NULL;
    ft_dataset *eval = NULL;
    ft_lora_opts lo = ft_lora_opts_default();       /* every linear layer */
    lo.r = 8;
    lo.alpha = 16;
    ft_result r = ft_model_load(&m, argv[1], NULL);
    if (r == FT_OK) r = ft_ctx_init(&ctx, NULL);
    if (r == FT_OK) r = ft_lora_attach(&lora, m, &lo);
    if (r == FT_OK) r = ft_dataset_load(&train, train_path, ft_model_tokenizer(m), ft_model_chat_template(m), NULL);
    if (r == FT_OK) r = ft_dataset_load(&eval, eval_path, ft_model_tokenizer(m), ft_model_chat_template(m), NULL);
    if (r == FT_OK) r = align(ctx, m, lora, obj, train, eval);
    if (r == FT_OK) r = ft_peft_save(lora, out, FT_FORMAT_LLAMACPP, NULL);
    if (r == FT_OK) printf("wrote %s (llama-cli --lora %s; merge it with 05_merge)\n", out, out);
    if (r != FT_OK) fprintf(stderr, "error: %s\n", ft_last_error());
    ft_dataset_free(eval);
    ft_dataset_free(train);
    ft_peft_free(lora);
    ft_ctx_free(ctx);
    ft_model_free(m);
    return r == FT_OK ? 0 : 1;
}
