/* test_resume.c - a training run killed (SIGKILL) in the middle and resumed from its last
   checkpoint gives the losses of the uninterrupted run, bit for bit, for supervised fine-tuning,
   GRPO and PPO. The model is tiny but has SmolLM2's tokenizer (from $FT_MODEL), so it trains on
   the project's real data: the demo's instructions with LoRA dropout (which draws from the RNG)
   and a cosine schedule; the arithmetic prompts with sampled completions, two micro-batches per
   step, two steps per rollout batch, LoRA+ and (PPO) the adaptive KL coefficient. */
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *MODEL = "build/tiny_resume.gguf", *CKPT = "build/resume_ckpt.gguf", *LOG = "build/resume_losses.txt";
enum { STEPS = 12, KILL_AT = 7 };

typedef struct { float loss[STEPS + 1]; FILE *log; int kill_at; } rec;
static int on_step(void *user, const ft_step_info *s) {
    rec *r = (rec *)user;
    r->loss[s->step] = (float)s->loss;
    if (r->log) { fprintf(r->log, "%lld %a\n", (long long)s->step, s->loss); fflush(r->log); }
    if (r->kill_at && s->step == r->kill_at) raise(SIGKILL);       /* no clean-up, no flush */
    return 0;
}

/* a reward the tiny model can learn: the share of even token ids in the completion */
static float even_ids(void *user, const ft_rollout *r) {
    int64_t i, k = 0;
    (void)user;
    for (i = 0; i < r->len; i++) k += r->ids[i] % 2 == 0;
    return r->len ? (float)k / (float)r->len : 0.0f;
}

/* one run: fresh model + adapter + context, train to STEPS (resuming when asked) */
static ft_result run(ft_objective obj, rec *r, int save, int resume) {
    ft_model *m; ft_peft *p; ft_ctx *ctx; ft_dataset *d; ft_lora_opts lo; ft_train_opts to; ft_ctx_opts co; ft_data_opts dopt; ft_result res;
    ft_reward_term rw;
    int rl = obj == FT_OBJ_GRPO || obj == FT_OBJ_PPO;
    if (ft_model_load(&m, MODEL, NULL) != FT_OK) return FT_ERR_IO;
    memset(&co, 0, sizeof co); co.n_threads = 2; co.seed = 7;
    ft_ctx_init(&ctx, &co);
    memset(&lo, 0, sizeof lo); lo.r = 4; lo.alpha = 8; lo.dropout = rl ? 0.0f : 0.1f; lo.reward_head = obj == FT_OBJ_PPO;
    ft_lora_attach(&p, m, &lo);
    memset(&dopt, 0, sizeof dopt); dopt.max_len = 96;
    res = ft_dataset_load(&d, rl ? "examples/data/arith_train.jsonl" : "examples/data/dates_train.jsonl", ft_model_tokenizer(m), ft_model_chat_template(m), &dopt);
    if (res != FT_OK) return res;
    to = ft_train_opts_default(obj);
    to.steps = STEPS; to.batch = 4; to.grad_accum = 2; to.lr = 3e-3f; to.sched = FT_SCHED_COSINE; to.warmup = 2;
    to.max_grad_norm = 1.0f; to.seed = 11; to.on_step = on_step; to.user = r;
    if (rl) {
        rw.fn = even_ids; rw.user = NULL; rw.weight = 1;
        to.rl.rewards = &rw; to.rl.n_rewards = 1;
        to.rl.prompts = 2; to.rl.group = 3; to.rl.max_new = 6; to.rl.iterations = 2;
        to.rl.grpo.beta = 0.04f; to.rl.ppo.kl_target = 0.5f; to.lr_scale_b = 4;
    }
    if (save) { to.checkpoint_path = CKPT; to.save_every = 1; }
    if (resume) to.resume_from = CKPT;
    res = ft_train(ctx, m, ft_peft_params(p), d, &to, NULL);
    ft_dataset_free(d); ft_peft_free(p); ft_ctx_free(ctx); ft_model_free(m);
    return res;
}

static void killed_run_resumes(ft_objective obj) {
    rec a, b; pid_t pid; int status, s; FILE *f; char line[128];
    const char *name = ft_objective_name(obj);
    memset(&a, 0, sizeof a); memset(&b, 0, sizeof b);
    CHECK_OK(run(obj, &a, 0, 0));                                 /* uninterrupted */
    remove(CKPT); remove(LOG);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {                                               /* the run that gets killed */
        rec c; memset(&c, 0, sizeof c);
        c.log = fopen(LOG, "w"); c.kill_at = KILL_AT;
        run(obj, &c, 1, 0);
        _exit(3);                                                 /* not reached */
    }
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "%s: the child was killed (status %d)", name, status);
    f = fopen(LOG, "r");
    CHECK(f != NULL, "%s: the killed run logged its steps", name);
    if (!f) return;
    while (fgets(line, sizeof line, f)) { long long st; double l; if (sscanf(line, "%lld %la", &st, &l) == 2 && st <= STEPS) b.loss[st] = (float)l; }
    fclose(f);
    CHECK_OK(run(obj, &b, 1, 1));                                 /* resume from the last checkpoint */
    for (s = 1; s <= STEPS; s++)
        CHECK(memcmp(&a.loss[s], &b.loss[s], sizeof(float)) == 0, "%s step %d: uninterrupted %.9g, killed + resumed %.9g", name, s, a.loss[s], b.loss[s]);
    printf("    %-4s losses %.4f -> %.4f over %d steps; killed at step %d, resumed, all %d losses identical\n", name, a.loss[1], a.loss[STEPS], STEPS, KILL_AT, STEPS);
    if (obj == FT_OBJ_SFT) CHECK(a.loss[STEPS] < a.loss[1], "it learns");
    remove(CKPT); remove(LOG);
}
TEST(killed_sft_run_resumes_bit_identically) { killed_run_resumes(FT_OBJ_SFT); }
TEST(killed_grpo_run_resumes_bit_identically) { killed_run_resumes(FT_OBJ_GRPO); }
TEST(killed_ppo_run_resumes_bit_identically) { killed_run_resumes(FT_OBJ_PPO); }

int main(void) {
    const char *src = getenv("FT_MODEL");
    if (!src || !tiny_model_write_vocab(MODEL, FT_TYPE_F32, 5, src)) { printf("FAIL - needs FT_MODEL (tools/fetch-model) for the tokenizer: %s\n", ft_last_error()); return 1; }
    RUN(killed_sft_run_resumes_bit_identically);
    RUN(killed_grpo_run_resumes_bit_identically);
    RUN(killed_ppo_run_resumes_bit_identically);
    remove(MODEL);
    return ft_test_summary("test_resume");
}
