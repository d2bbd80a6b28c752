/* test_dist.c - data parallelism (ft_train_opts.comm) without MPI: the ranks are threads of this
   process and the collectives a loopback group over shared memory (sums taken in rank order, as a
   2-rank MPI_Allreduce takes them). On a tiny model with SmolLM2's tokenizer (from $FT_MODEL),
   trained on the project's data:
   - 2 ranks x batch 2 give, step by step over 20 steps, the losses of one process with batch 2 x
     2 micro-batches (the same global batch) for SFT (LoRA dropout on), DPO and GRPO (sampling),
     and over 8 steps for packed CPT, KTO and PPO (adaptive KL);
   - ZeRO-1 gives the same bits as plain data parallelism;
   - a run checkpointed on 2 ranks (ZeRO-1) resumes on 1, and one checkpointed on 1 resumes on 2
     (ZeRO-1), continuing the uninterrupted curve;
   - ranks whose options differ stop with a message naming the option; when rank 0 stops (its step
     callback), the other rank stops at the same step with a message, instead of waiting. */
#define _POSIX_C_SOURCE 200809L          /* pthread barriers */
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"
#include <pthread.h>

static const char *MODEL = "build/tiny_dist.gguf", *CKPT = "build/dist_ckpt.gguf";
enum { STEPS = 20, MAX_RANKS = 2 };

/* ---- a loopback group: each rank posts its buffer, everyone reads what it needs between barriers -- */
typedef struct group { int size; pthread_barrier_t bar; void *slot[MAX_RANKS]; } group;
typedef struct member { group *g; int rank; } member;

static ft_result lb_all_reduce(void *user, void *x, int64_t n, ft_type type) {
    member *me = (member *)user; group *g = me->g; int64_t i; int r;
    size_t es = type == FT_TYPE_F64 ? 8 : 4;
    char *sum = (char *)malloc((size_t)n * es + 1);
    g->slot[me->rank] = x;
    pthread_barrier_wait(&g->bar);
    for (i = 0; i < n; i++) {
        if (type == FT_TYPE_F64) { double s = ((double *)g->slot[0])[i]; for (r = 1; r < g->size; r++) s += ((double *)g->slot[r])[i]; ((double *)sum)[i] = s; }
        else { float s = ((float *)g->slot[0])[i]; for (r = 1; r < g->size; r++) s += ((float *)g->slot[r])[i]; ((float *)sum)[i] = s; }
    }
    pthread_barrier_wait(&g->bar);
    memcpy(x, sum, (size_t)n * es);
    free(sum);
    return FT_OK;
}
static ft_result lb_reduce_scatter(void *user, float *x, int64_t n) {
    member *me = (member *)user; group *g = me->g; int64_t lo, hi, i; int r; float *sum;
    ft_shard_range(n, me->rank, g->size, &lo, &hi);
    sum = (float *)malloc((size_t)(hi - lo) * 4 + 4);
    g->slot[me->rank] = x;
    pthread_barrier_wait(&g->bar);
    for (i = lo; i < hi; i++) { float s = ((float *)g->slot[0])[i]; for (r = 1; r < g->size; r++) s += ((float *)g->slot[r])[i]; sum[i - lo] = s; }
    pthread_barrier_wait(&g->bar);
    memcpy(x + lo, sum, (size_t)(hi - lo) * 4);
    free(sum);
    return FT_OK;
}
static ft_result lb_all_gather(void *user, float *x, int64_t n) {
    member *me = (member *)user; group *g = me->g; int64_t lo, hi; int r;
    g->slot[me->rank] = x;
    pthread_barrier_wait(&g->bar);
    for (r = 0; r < g->size; r++) {
        if (r == me->rank) continue;
        ft_shard_range(n, r, g->size, &lo, &hi);
        memcpy(x + lo, (float *)g->slot[r] + lo, (size_t)(hi - lo) * 4);
    }
    pthread_barrier_wait(&g->bar);
    return FT_OK;
}
static ft_result lb_broadcast(void *user, void *x, int64_t bytes, int root) {
    member *me = (member *)user; group *g = me->g;
    g->slot[me->rank] = x;
    pthread_barrier_wait(&g->bar);
    if (me->rank != root) memcpy(x, g->slot[root], (size_t)bytes);
    pthread_barrier_wait(&g->bar);
    return FT_OK;
}

/* ---- one rank's run ---- */
typedef struct job {
    ft_objective obj;
    int ranks, rank, accum, zero1, stop_at, steps_delta, save, resume;
    ft_collective cc; member me;
    double loss[STEPS + 1]; double comm_s;
    float *params; int64_t n_params;
    ft_result res; char err[1100];
} job;

static float even_ids(void *user, const ft_rollout *r) {
    int64_t i, k = 0;
    (void)user;
    for (i = 0; i < r->len; i++) k += r->ids[i] % 2 == 0;
    return r->len ? (float)k / (float)r->len : 0.0f;
}
static int on_step(void *user, const ft_step_info *s) {
    job *j = (job *)user;
    j->loss[s->step] = s->loss;
    j->comm_s += s->comm_s;
    return j->stop_at && s->step == j->stop_at;
}

static void *run_job(void *arg) {
    job *j = (job *)arg; ft_model *m; ft_peft *p; ft_ctx *ctx; ft_dataset *d; ft_lora_opts lo; ft_train_opts to; ft_ctx_opts co;
    ft_data_opts dopt; ft_reward_term rw; ft_params *P; int i;
    int rl = j->obj == FT_OBJ_GRPO || j->obj == FT_OBJ_PPO, pref = j->obj == FT_OBJ_DPO;
    const char *data = rl ? "examples/data/arith_train.jsonl" : pref ? "examples/data/dates_pref_train.jsonl" :
                       j->obj == FT_OBJ_KTO ? "examples/data/dates_kto_train.jsonl" : j->obj == FT_OBJ_CPT ? "examples/data/general_train.jsonl" : "examples/data/dates_train.jsonl";
    if ((j->res = ft_model_load(&m, MODEL, NULL)) != FT_OK) { snprintf(j->err, sizeof j->err, "%s", ft_last_error()); return NULL; }
    memset(&co, 0, sizeof co); co.n_threads = 1; co.seed = 7;
    ft_ctx_init(&ctx, &co);
    memset(&lo, 0, sizeof lo); lo.r = 4; lo.alpha = 8; lo.dropout = j->obj == FT_OBJ_SFT ? 0.1f : 0.0f; lo.reward_head = j->obj == FT_OBJ_PPO;
    ft_lora_attach(&p, m, &lo);
    memset(&dopt, 0, sizeof dopt); dopt.max_len = 96;
    j->res = ft_dataset_load(&d, data, ft_model_tokenizer(m), ft_model_chat_template(m), &dopt);
    if (j->res == FT_OK) {
        to = ft_train_opts_default(j->obj);
        to.steps = STEPS + j->steps_delta; to.batch = 2; to.grad_accum = j->accum; to.lr = 3e-3f; to.warmup = 2; to.seed = 11;
        to.on_step = on_step; to.user = j; to.zero1 = j->zero1;
        if (rl) {
            rw.fn = even_ids; rw.user = NULL; rw.weight = 1;
            to.rl.rewards = &rw; to.rl.n_rewards = 1; to.rl.prompts = 2; to.rl.group = 3; to.rl.max_new = 6; to.rl.grpo.beta = 0.04f;
            if (j->obj == FT_OBJ_PPO) { to.rl.group = 1; to.rl.iterations = 2; to.rl.ppo.kl_target = 0.5f; }
        }
        if (j->save) { to.checkpoint_path = CKPT; to.save_every = 5; }
        if (j->resume) to.resume_from = CKPT;
        if (j->ranks > 1) {
            j->cc.rank = j->rank; j->cc.size = j->ranks; j->cc.user = &j->me;
            j->cc.all_reduce = lb_all_reduce; j->cc.reduce_scatter = lb_reduce_scatter; j->cc.all_gather = lb_all_gather; j->cc.broadcast = lb_broadcast;
            to.comm = &j->cc;
        }
        j->res = ft_train(ctx, m, ft_peft_params(p), d, &to, NULL);
        if (j->res != FT_OK) snprintf(j->err, sizeof j->err, "%s", ft_last_error());
        P = ft_peft_params(p);
        for (i = 0, j->n_params = 0; i < ft_params_count(P); i++) j->n_params += ft_numel(ft_params_get(P, i));
        j->params = (float *)malloc((size_t)j->n_params * sizeof(float));
        for (i = 0, j->n_params = 0; i < ft_params_count(P); i++) {
            ft_tensor *t = ft_params_get(P, i);
            memcpy(j->params + j->n_params, t->data, (size_t)ft_numel(t) * sizeof(float));
            j->n_params += ft_numel(t);
        }
        ft_dataset_free(d);
    } else snprintf(j->err, sizeof j->err, "%s", ft_last_error());
    ft_peft_free(p); ft_ctx_free(ctx); ft_model_free(m);
    return NULL;
}

/* `ranks` ranks of one run (threads over a loopback group); jobs[0] is rank 0, and the others
   its copies unless `copy` is 0 */
static void run_group(job *jobs, int ranks, int copy) {
    pthread_t th[MAX_RANKS]; group g; int r;
    memset(&g, 0, sizeof g);
    g.size = ranks;
    pthread_barrier_init(&g.bar, NULL, (unsigned)ranks);
    for (r = 0; r < ranks; r++) {
        if (r > 0 && copy) jobs[r] = jobs[0];
        jobs[r].ranks = ranks; jobs[r].rank = r; jobs[r].me.g = &g; jobs[r].me.rank = r;
    }
    for (r = 0; r < ranks; r++) pthread_create(&th[r], NULL, run_job, &jobs[r]);
    for (r = 0; r < ranks; r++) pthread_join(th[r], NULL);
    pthread_barrier_destroy(&g.bar);
}
static job make_job(ft_objective obj, int accum) {
    job j;
    memset(&j, 0, sizeof j);
    j.obj = obj; j.accum = accum;
    return j;
}
static void free_jobs(job *jobs, int n) { int i; for (i = 0; i < n; i++) free(jobs[i].params); }

/* the largest |a - b| / max(|b|, 1e-3) over steps from..to */
static double curve_diff(const job *a, const job *b, int from, int to) {
    double worst = 0; int s;
    for (s = from; s <= to; s++) {
        double d = fabs(a->loss[s] - b->loss[s]) / fmax(fabs(b->loss[s]), 1e-3);
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

/* 2 ranks x 1 micro-batch of 2 vs 1 process x 2 micro-batches of 2: the same 4 examples a step */
static void two_ranks_equal_one(ft_objective obj, double tol, int steps) {
    job one = make_job(obj, 2), two[2], z[2];
    const char *name = ft_objective_name(obj);
    double d; int s, same = 1;
    two[0] = make_job(obj, 1);
    z[0] = make_job(obj, 1); z[0].zero1 = 1;
    one.steps_delta = two[0].steps_delta = z[0].steps_delta = steps - STEPS;
    run_job(&one);
    run_group(two, 2, 1);
    run_group(z, 2, 1);
    CHECK(one.res == FT_OK && two[0].res == FT_OK && two[1].res == FT_OK && z[0].res == FT_OK && z[1].res == FT_OK,
          "%s: runs ok (%s | %s | %s)", name, one.err, two[0].err, two[1].err);
    d = curve_diff(&two[0], &one, 1, steps);
    CHECK(d <= tol, "%s: 2 ranks vs 1 process: losses differ by %.3g (relative) > %.1g", name, d, tol);
    for (s = 1; s <= steps; s++) same &= memcmp(&z[0].loss[s], &two[0].loss[s], sizeof(double)) == 0;
    CHECK(same, "%s: ZeRO-1 losses are the same bits as plain data parallelism", name);
    CHECK(two[0].n_params == two[1].n_params && memcmp(two[0].params, two[1].params, (size_t)two[0].n_params * 4) == 0, "%s: both ranks hold the same parameters", name);
    CHECK(z[0].n_params == two[0].n_params && memcmp(z[0].params, two[0].params, (size_t)z[0].n_params * 4) == 0 &&
          memcmp(z[1].params, two[0].params, (size_t)z[0].n_params * 4) == 0, "%s: ZeRO-1's parameters are the same bits on both ranks", name);
    printf("    %-4s 1 process: loss %.4f -> %.4f over %d steps; 2 ranks: largest relative difference %.2g (tolerance %.0g); ZeRO-1 identical; comm %.3f s\n",
           name, one.loss[1], one.loss[steps], steps, d, tol, two[0].comm_s);
    free_jobs(&one, 1); free_jobs(two, 2); free_jobs(z, 2);
}
TEST(sft_two_ranks_equal_one_process) { two_ranks_equal_one(FT_OBJ_SFT, 1e-4, STEPS); }
TEST(dpo_two_ranks_equal_one_process) { two_ranks_equal_one(FT_OBJ_DPO, 1e-4, STEPS); }
TEST(grpo_two_ranks_equal_one_process) { two_ranks_equal_one(FT_OBJ_GRPO, 1e-3, STEPS); }
/* the other kinds of micro-batch, shorter: packed rows (the skipped slots are packed to find where
   they end), KTO's mismatched pairs, PPO's value head and adaptive KL coefficient */
TEST(cpt_kto_ppo_two_ranks_equal_one_process) {
    two_ranks_equal_one(FT_OBJ_CPT, 1e-4, 8);
    two_ranks_equal_one(FT_OBJ_KTO, 1e-4, 8);
    two_ranks_equal_one(FT_OBJ_PPO, 1e-3, 8);
}

/* checkpointed at step 10 on `ranks_a`, resumed on `ranks_b`: the uninterrupted curve goes on */
static void resume_across(int ranks_a, int ranks_b) {
    job one = make_job(FT_OBJ_SFT, 2), a[2], b[2];
    double d;
    a[0] = make_job(FT_OBJ_SFT, ranks_a == 1 ? 2 : 1); a[0].save = 1; a[0].stop_at = 10; a[0].zero1 = ranks_a > 1;
    b[0] = make_job(FT_OBJ_SFT, ranks_b == 1 ? 2 : 1); b[0].save = 1; b[0].resume = 1; b[0].zero1 = ranks_b > 1;
    remove(CKPT);
    run_job(&one);
    if (ranks_a > 1) run_group(a, ranks_a, 1); else run_job(&a[0]);
    CHECK(a[0].res == FT_ERR_STATE, "the first part stops at step 10 (callback): %s", a[0].err);
    if (ranks_a > 1) CHECK(a[1].res == FT_ERR_STATE && strstr(a[1].err, "rank 0 stopped at step 10"), "rank 1 stops with rank 0: %s", a[1].err);
    if (ranks_b > 1) run_group(b, ranks_b, 1); else run_job(&b[0]);
    CHECK(b[0].res == FT_OK, "resumed: %s", b[0].err);
    memcpy(b[0].loss, a[0].loss, 11 * sizeof(double));
    d = curve_diff(&b[0], &one, 11, STEPS);
    CHECK(d <= 1e-4, "%d -> %d ranks: steps 11..%d differ from the uninterrupted run by %.3g", ranks_a, ranks_b, STEPS, d);
    printf("    checkpointed on %d rank%s%s at step 10, resumed on %d%s: steps 11..%d within %.2g of the uninterrupted run\n", ranks_a, ranks_a > 1 ? "s" : "",
           ranks_a > 1 ? " (ZeRO-1)" : "", ranks_b, ranks_b > 1 ? " (ZeRO-1)" : "", STEPS, d);
    free_jobs(&one, 1); free_jobs(a, ranks_a); free_jobs(b, ranks_b);
    remove(CKPT);
}
TEST(resume_two_ranks_on_one) { resume_across(2, 1); }
TEST(resume_one_rank_on_two) { resume_across(1, 2); }

TEST(ranks_that_disagree_stop_with_a_message) {
    job g[2];
    g[0] = make_job(FT_OBJ_SFT, 1);
    g[1] = g[0];
    g[1].steps_delta = -5;                                  /* rank 1 asks for 15 steps */
    run_group(g, 2, 0);
    CHECK(g[1].res == FT_ERR_INVALID && strstr(g[1].err, "rank 1's steps is 15, rank 0's 20"), "rank 1: %s", g[1].err);
    CHECK(g[0].res == FT_ERR_INVALID && strstr(g[0].err, "differ from rank 0's"), "rank 0: %s", g[0].err);
    printf("    rank 1: %s\n    rank 0: %s\n", g[1].err, g[0].err);
    free_jobs(g, 2);
}

TEST(shard_ranges_cover_the_block) {
    int64_t lo, hi, n, next; int size, r, ok = 1;
    for (n = 0; n < 40; n++)
        for (size = 1; size <= 5; size++)
            for (r = 0, next = 0; r < size; r++) {
                ft_shard_range(n, r, size, &lo, &hi);
                ok &= lo == next && hi >= lo && hi <= n;
                next = hi;
                if (r == size - 1) ok &= hi == n;
            }
    CHECK(ok, "shards are contiguous, in rank order and cover [0, n)");
}

int main(void) {
    const char *src = getenv("FT_MODEL");
    if (!src || !tiny_model_write_vocab(MODEL, FT_TYPE_F32, 5, src)) { printf("FAIL - needs FT_MODEL (tools/fetch-model) for the tokenizer: %s\n", ft_last_error()); return 1; }
    RUN(shard_ranges_cover_the_block);
    RUN(sft_two_ranks_equal_one_process);
    RUN(dpo_two_ranks_equal_one_process);
    RUN(grpo_two_ranks_equal_one_process);
    RUN(cpt_kto_ppo_two_ranks_equal_one_process);
    RUN(resume_two_ranks_on_one);
    RUN(resume_one_rank_on_two);
    RUN(ranks_that_disagree_stop_with_a_message);
    remove(MODEL);
    return ft_test_summary("test_dist");
}
