/* test_resume.c - a training run killed (SIGKILL) in the middle and resumed from its last
   checkpoint gives the losses of the uninterrupted run, bit for bit. The model is tiny but has
   SmolLM2's tokenizer (from $FT_MODEL), so it trains on the demo's real instruction data with
   LoRA dropout (which draws from the RNG) and a cosine schedule. */
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *MODEL = "build/tiny_resume.gguf", *CKPT = "build/resume_ckpt.gguf", *LOG = "build/resume_losses.txt";
enum { STEPS = 12, KILL_AT = 6 };

typedef struct { float loss[STEPS + 1]; FILE *log; int kill_at; } rec;
static int on_step(void *user, const ft_step_info *s) {
    rec *r = (rec *)user;
    r->loss[s->step] = (float)s->loss;
    if (r->log) { fprintf(r->log, "%lld %a\n", (long long)s->step, s->loss); fflush(r->log); }
    if (r->kill_at && s->step == r->kill_at) raise(SIGKILL);       /* no clean-up, no flush */
    return 0;
}

/* one run: fresh model + adapter + context, train to STEPS (resuming when asked) */
static ft_result run(rec *r, int save, int resume) {
    ft_model *m; ft_peft *p; ft_ctx *ctx; ft_dataset *d; ft_lora_opts lo; ft_train_opts to; ft_ctx_opts co; ft_data_opts dopt; ft_result res;
    if (ft_model_load(&m, MODEL, NULL) != FT_OK) return FT_ERR_IO;
    memset(&co, 0, sizeof co); co.n_threads = 2; co.seed = 7;
    ft_ctx_init(&ctx, &co);
    memset(&lo, 0, sizeof lo); lo.r = 4; lo.alpha = 8; lo.dropout = 0.1f;
    ft_lora_attach(&p, m, &lo);
    memset(&dopt, 0, sizeof dopt); dopt.max_len = 96;
    if ((res = ft_dataset_load(&d, "examples/data/dates_train.jsonl", ft_model_tokenizer(m), ft_model_chat_template(m), &dopt)) != FT_OK) return res;
    memset(&to, 0, sizeof to);
    to.steps = STEPS; to.batch = 4; to.grad_accum = 2; to.lr = 3e-3f; to.sched = FT_SCHED_COSINE; to.warmup = 2;
    to.max_grad_norm = 1.0f; to.seed = 11; to.on_step = on_step; to.user = r;
    if (save) { to.checkpoint_path = CKPT; to.save_every = 1; }
    if (resume) to.resume_from = CKPT;
    res = ft_train(ctx, m, ft_peft_params(p), d, &to, NULL);
    ft_dataset_free(d); ft_peft_free(p); ft_ctx_free(ctx); ft_model_free(m);
    return res;
}

TEST(killed_run_resumes_bit_identically) {
    rec a, b; pid_t pid; int status, s; FILE *f; char line[128];
    memset(&a, 0, sizeof a); memset(&b, 0, sizeof b);
    CHECK_OK(run(&a, 0, 0));                                      /* uninterrupted */
    remove(CKPT); remove(LOG);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {                                               /* the run that gets killed */
        rec c; memset(&c, 0, sizeof c);
        c.log = fopen(LOG, "w"); c.kill_at = KILL_AT;
        run(&c, 1, 0);
        _exit(3);                                                 /* not reached */
    }
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the child was killed (status %d)", status);
    f = fopen(LOG, "r");
    CHECK(f != NULL, "the killed run logged its steps");
    if (!f) return;
    while (fgets(line, sizeof line, f)) { long long st; double l; if (sscanf(line, "%lld %la", &st, &l) == 2 && st <= STEPS) b.loss[st] = (float)l; }
    fclose(f);
    CHECK_OK(run(&b, 1, 1));                                      /* resume from the last checkpoint */
    for (s = 1; s <= STEPS; s++)
        CHECK(memcmp(&a.loss[s], &b.loss[s], sizeof(float)) == 0, "step %d: uninterrupted %.9g, killed + resumed %.9g", s, a.loss[s], b.loss[s]);
    printf("    losses %.4f -> %.4f over %d steps; killed at step %d, resumed, all %d losses identical\n", a.loss[1], a.loss[STEPS], STEPS, KILL_AT, STEPS);
    CHECK(a.loss[STEPS] < a.loss[1], "it learns");
    remove(CKPT); remove(LOG);
}

int main(void) {
    const char *src = getenv("FT_MODEL");
    if (!src || !tiny_model_write_vocab(MODEL, FT_TYPE_F32, 5, src)) { printf("FAIL - needs FT_MODEL (tools/fetch-model) for the tokenizer: %s\n", ft_last_error()); return 1; }
    RUN(killed_run_resumes_bit_identically);
    remove(MODEL);
    return ft_test_summary("test_resume");
}
