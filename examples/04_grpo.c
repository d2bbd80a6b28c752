/* 04_grpo.c - reinforcement learning with GRPO: for each prompt the model samples a group of
   completions, a reward function written in C scores each one, and the adapter is pushed towards
   the completions that scored above their group's mean. Here the rewards are the library's
   ft_reward_number (the last number is the right answer) plus one of our own: the completion is
   just a number, nothing else. Each step prints the mean reward of the sampled completions; the
   greedy completions of held-out prompts are scored before and after.
   usage: build/04_grpo MODEL.gguf [train.jsonl [eval.jsonl]]                  FT_STEPS=N: N steps
   data:  {"prompt": ..., "answer": ...} per line (examples/data/arith_*.jsonl)
   build: make examples (links build/finetune.o, the implementation compiled once), or as one file:
   cc -O2 -march=native -I. -DFINETUNE_IMPLEMENTATION examples/04_grpo.c -o 04_grpo -lm -lpthread */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include "finetune.h"

/* our reward: 1 when the completion is an integer and nothing else (spaces aside), else 0 */
static float just_a_number(void *user, const ft_rollout *r) {
    const char *p = r->text;
    (void)user;
    while (isspace((unsigned char)*p)) p++;
    if (*p == '-') p++;
    if (!isdigit((unsigned char)*p)) return 0.0f;
    while (isdigit((unsigned char)*p)) p++;
    while (isspace((unsigned char)*p)) p++;
    return *p == 0 ? 1.0f : 0.0f;
}

static int progress(void *user, const ft_step_info *s) {
    (void)user;
    printf("step %lld/%lld  loss %+.4f  reward %.3f (std %.3f)  kl %.4f  completion length %.1f\n", (long long)s->step,
           (long long)s->steps, s->loss, s->rl.reward, s->rl.reward_std, s->rl.kl, s->rl.completion_len);
    return 0;
}

static ft_result grpo(ft_ctx *ctx, ft_model *m, ft_peft *lora, ft_dataset *train, ft_dataset *eval) {
    const ft_reward_term rewards[2] = {{ft_reward_number, NULL, 1.0f}, {just_a_number, NULL, 0.5f}};
    const char *steps = getenv("FT_STEPS");
    ft_train_opts to = ft_train_opts_default(FT_OBJ_GRPO);
    double before = 0;
    double after = 0;
    double solved = 0;
    to.steps = steps ? atoll(steps) : 40;
    to.lr = 1e-4f;
    to.rl.rewards = rewards;
    to.rl.n_rewards = 2;
    to.rl.prompts = 2;                              /* prompts per step ...                */
    to.rl.group = 8;                                /* ... and sampled completions of each */
    to.rl.max_new = 24;
    to.on_step = progress;
    ft_result r = ft_eval_rl(ctx, m, eval, to.rl.max_new, rewards, 2, 1.5f, 20, &before, NULL);
    if (r == FT_OK) printf("before: mean reward of greedy completions %.3f (of 1.5)\n", before);
    if (r == FT_OK) r = ft_train(ctx, m, ft_peft_params(lora), train, &to, NULL);
    if (r == FT_OK) r = ft_eval_rl(ctx, m, eval, to.rl.max_new, rewards, 2, 1.5f, 20, &after, &solved);
    if (r == FT_OK) printf("after:  mean reward of greedy completions %.3f (of 1.5), %.0f%% right and bare\n", after, 100 * solved);
    return r;
}

int main(int argc, char **argv) {
    const char *train_path = argc > 2 ? argv[2] : "examples/data/arith_train.jsonl";
    const char *eval_path = argc > 3 ? argv[3] : "examples/data/arith_eval.jsonl";
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [train.jsonl [eval.jsonl]]\n", argv[0]);
        return 2;
    }
    ft_model *m = NULL;
    ft_ctx *ctx = NULL;
    ft_peft *lora = NULL;
    ft_dataset *train = NULL;
    ft_dataset *eval = NULL;
    ft_lora_opts lo = ft_lora_opts_default();
    lo.r = 16;
    lo.alpha = 32;
    ft_result r = ft_model_load(&m, argv[1], NULL);
    if (r == FT_OK) r = ft_ctx_init(&ctx, NULL);
    if (r == FT_OK) r = ft_lora_attach(&lora, m, &lo);
    if (r == FT_OK) r = ft_dataset_load(&train, train_path, ft_model_tokenizer(m), ft_model_chat_template(m), NULL);
    if (r == FT_OK) r = ft_dataset_load(&eval, eval_path, ft_model_tokenizer(m), ft_model_chat_template(m), NULL);
    if (r == FT_OK) r = grpo(ctx, m, lora, train, eval);
    if (r == FT_OK) r = ft_peft_save(lora, "adapter_grpo.gguf", FT_FORMAT_LLAMACPP, NULL);
    if (r == FT_OK) printf("wrote adapter_grpo.gguf (llama-cli --lora adapter_grpo.gguf; merge it with 05_merge)\n");
    if (r != FT_OK) fprintf(stderr, "error: %s\n", ft_last_error());
    ft_dataset_free(eval);
    ft_dataset_free(train);
    ft_peft_free(lora);
    ft_ctx_free(ctx);
    ft_model_free(m);
    return r == FT_OK ? 0 : 1;
}
