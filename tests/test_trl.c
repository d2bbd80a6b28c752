/* test_trl.c - the preference losses against TRL's own loss code (tests/fixtures/trl_losses.txt,
   written by tools/ref/trl_fixtures.py with TRL 1.16): loss, gradients with respect to the
   log-probs, and the logged rewards. Our math is f32, TRL's f64: tolerance 2e-5 relative + 1e-6.
   Covered: DPO sigmoid, cDPO (label smoothing; TRL <= 0.23's definition), IPO, hinge, SimPO
   (cpo_alpha 0), ORPO, robust DPO, KTO (desirable/undesirable weights, the clamped KL point), the
   reward model with margin and centering; GRPO advantages (group / batch / no scaling) and losses
   (grpo, bnpo, dr_grpo, dapo; beta 0 and 0.04; epsilon_high 0.2 and 0.28) with the clip metrics;
   PPO's rewards, GAE, whitening, losses and metrics (TRL 1.9's, k1 and k3 with whitened rewards). */
#include "../finetune.h"
#include "ft_test.h"

#define MAXV 64
typedef struct { char name[48]; int n; double v[MAXV]; } vec;
typedef struct { char name[64], kind[64], loss_type[64]; double beta, ls, gamma, margin, coef, dw, uw;
                 double eps, eps_high, max_len, num_items, G, n_prompts, kl_coef, gamma_rl, lam, cliprange, cliprange_value, vf_coef, whiten;
                 char scale[64], kl_est[64]; vec in[16], out[32], grad[16]; int nin, nout, ngrad; } rec;

static rec R[64]; static int NR;

static void load(const char *path) {
    FILE *f = fopen(path, "r"); char line[8192];
    rec *r = NULL;
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        char key[16], a[64], b[64]; int off = 0;
        if (line[0] == '#' || sscanf(line, "%15s", key) != 1) continue;
        if (!strcmp(key, "case") && NR < 64) { r = &R[NR++]; memset(r, 0, sizeof *r); sscanf(line, "case %63s", r->name); r->coef = -1; continue; }
        if (!r) continue;
        if (!strcmp(key, "kind")) sscanf(line, "kind %63s", r->kind);
        else if (!strcmp(key, "param") && sscanf(line, "param %63s %63s", a, b) == 2) {
            if (!strcmp(a, "loss_type")) snprintf(r->loss_type, sizeof r->loss_type, "%s", b);
            else if (!strcmp(a, "beta")) r->beta = atof(b);
            else if (!strcmp(a, "label_smoothing")) r->ls = atof(b);
            else if (!strcmp(a, "simpo_gamma")) r->gamma = atof(b);
            else if (!strcmp(a, "margin")) r->margin = strcmp(b, "none") ? atof(b) : -1;
            else if (!strcmp(a, "center_rewards_coefficient")) r->coef = strcmp(b, "none") ? atof(b) : -1;
            else if (!strcmp(a, "desirable_weight")) r->dw = atof(b);
            else if (!strcmp(a, "undesirable_weight")) r->uw = atof(b);
            else if (!strcmp(a, "epsilon")) r->eps = atof(b);
            else if (!strcmp(a, "epsilon_high")) r->eps_high = atof(b);
            else if (!strcmp(a, "max_completion_length")) r->max_len = atof(b);
            else if (!strcmp(a, "num_items_in_batch")) r->num_items = atof(b);
            else if (!strcmp(a, "num_generations")) r->G = atof(b);
            else if (!strcmp(a, "num_prompts")) r->n_prompts = atof(b);
            else if (!strcmp(a, "scale_rewards")) snprintf(r->scale, sizeof r->scale, "%s", b);
            else if (!strcmp(a, "kl_coef")) r->kl_coef = atof(b);
            else if (!strcmp(a, "kl_estimator")) snprintf(r->kl_est, sizeof r->kl_est, "%s", b);
            else if (!strcmp(a, "whiten_rewards")) r->whiten = atof(b);
            else if (!strcmp(a, "gamma") && !strcmp(r->kind, "ppo")) r->gamma_rl = atof(b);
            else if (!strcmp(a, "lam")) r->lam = atof(b);
            else if (!strcmp(a, "cliprange")) r->cliprange = atof(b);
            else if (!strcmp(a, "cliprange_value")) r->cliprange_value = atof(b);
            else if (!strcmp(a, "vf_coef")) r->vf_coef = atof(b);
        } else if (!strcmp(key, "in") || !strcmp(key, "out") || !strcmp(key, "grad")) {
            vec *v; int k, n;
            if (r->nin == 16 || r->nout == 32 || r->ngrad == 16) continue;     /* more than these cases use */
            v = !strcmp(key, "in") ? &r->in[r->nin++] : !strcmp(key, "out") ? &r->out[r->nout++] : &r->grad[r->ngrad++];
            if (sscanf(line, "%*s %47s %d%n", v->name, &v->n, &off) < 2 || v->n > MAXV) { v->n = 0; continue; }
            for (k = 0, n = 0; k < v->n; k++) { sscanf(line + off, "%lf%n", &v->v[k], &n); off += n; }
        }
    }
    fclose(f);
}
static const vec *get(const vec *vs, int n, const char *name) { int i; for (i = 0; i < n; i++) if (!strcmp(vs[i].name, name)) return &vs[i]; return NULL; }
static const rec *find(const char *name) { int i; for (i = 0; i < NR; i++) if (!strcmp(R[i].name, name)) return &R[i]; return NULL; }

static ft_ctx *C;
static int close_to(double got, double want) { return fabs(got - want) <= 1e-6 + 2e-5 * fabs(want); }

/* a parameter tensor holding a fixture input (divided elementwise by `div` when given) */
static ft_tensor *param(ft_params *P, const char *nm, const vec *v, const vec *div) {
    int64_t s[1]; ft_tensor *t;
    s[0] = v->n;
    t = ft_params_add(P, nm, 1, s);
    (void)div;
    return t;
}
static void fill(ft_tensor *t, const vec *v, const vec *div) { int i; for (i = 0; i < v->n; i++) ((float *)t->data)[i] = (float)(v->v[i] / (div ? (div->v[i] < 1 ? 1 : div->v[i]) : 1)); }

static void check_vec(const char *cs, const char *what, const float *got, const vec *want, const vec *scale_div) {
    int i;
    for (i = 0; want && i < want->n; i++) {
        double g = got[i] / (scale_div ? (scale_div->v[i] < 1 ? 1 : scale_div->v[i]) : 1);
        CHECK(close_to(g, want->v[i]), "%s %s[%d]: %.9g vs TRL %.9g", cs, what, i, g, want->v[i]);
    }
}
static void check_stat(const char *cs, const rec *r, const char *name, double got) {
    const vec *w = get(r->out, r->nout, name);
    if (w) CHECK(close_to(got, w->v[0]), "%s %s: %.9g vs TRL %.9g", cs, name, got, w->v[0]);
}

/* a row of the objective table on the fixture's log-probs, with the fixture's beta, gamma, label
   smoothing */
static ft_tensor *pair_loss(ft_objective id, const rec *r, ft_pair_logps *lp, ft_pref_stats *st) {
    ft_train_opts o = ft_train_opts_default(id);
    o.beta = (float)r->beta; o.gamma = (float)r->gamma; o.label_smoothing = (float)r->ls;
    return ft_objective_get(id)->pair_loss(C, lp, &o, st);
}

/* DPO and its loss_type family: the table's row for TRL's loss_type name */
TEST(dpo_family) {
    static const char *cases[] = {"dpo_sigmoid_b0.1", "dpo_cdpo_ls0.1_legacy", "dpo_ipo_b0.1", "dpo_hinge_b0.1", "dpo_robust_ls0.1",
                                  "dpo_exo_pair", "dpo_nca_pair", "dpo_bco_pair", "dpo_sppo_hard", "dpo_aot", "dpo_aot_unpaired",
                                  "dpo_apo_zero", "dpo_apo_down", "dpo_discopop", "dpo_sigmoid_norm"};
    int c;
    for (c = 0; c < (int)(sizeof cases / sizeof cases[0]); c++) {
        const rec *r = find(cases[c]); ft_params *P; ft_tensor *pc, *pr, *rc, *rr, *loss; ft_pref_stats st; ft_pair_logps lp;
        ft_objective id = FT_OBJ_COUNT; int avg;
        const vec *lc = NULL, *lr = NULL;
        CHECK(r != NULL, "fixture case %s", cases[c]);
        if (!r) continue;
        if (!strcmp(r->loss_type, "cdpo_legacy_sigmoid")) id = FT_OBJ_DPO;      /* cDPO: dpo with label smoothing */
        else CHECK(ft_objective_parse(r->loss_type, &id), "%s: loss_type %s is a row of the table", cases[c], r->loss_type);
        if (id == FT_OBJ_COUNT) continue;
        avg = ft_objective_get(id)->averaged;
        if (avg) { lc = get(r->in, r->nin, "chosen_len"); lr = get(r->in, r->nin, "rejected_len"); }   /* per-token means */
        ft_params_init(&P);
        pc = param(P, "pc", get(r->in, r->nin, "chosen_logps"), lc); pr = param(P, "pr", get(r->in, r->nin, "rejected_logps"), lr);
        rc = param(P, "rc", get(r->in, r->nin, "ref_chosen_logps"), lc); rr = param(P, "rr", get(r->in, r->nin, "ref_rejected_logps"), lr);
        ft_params_alloc(P);
        fill(pc, get(r->in, r->nin, "chosen_logps"), lc); fill(pr, get(r->in, r->nin, "rejected_logps"), lr);
        fill(rc, get(r->in, r->nin, "ref_chosen_logps"), lc); fill(rr, get(r->in, r->nin, "ref_rejected_logps"), lr);
        rc->flags &= ~(uint32_t)FT_TENSOR_REQUIRES_GRAD; rr->flags &= ~(uint32_t)FT_TENSOR_REQUIRES_GRAD;
        ft_ctx_reset(C);
        memset(&lp, 0, sizeof lp);
        lp.chosen = pc; lp.rejected = pr; lp.ref_chosen = rc; lp.ref_rejected = rr;
        loss = pair_loss(id, r, &lp, &st);
        CHECK_OK(ft_backward(C, loss));
        check_stat(cases[c], r, "loss", ((float *)loss->data)[0]);
        /* d loss / d sum = d loss / d mean / len where the row averages */
        check_vec(cases[c], "grad chosen", pc->grad, get(r->grad, r->ngrad, "chosen_logps"), lc);
        check_vec(cases[c], "grad rejected", pr->grad, get(r->grad, r->ngrad, "rejected_logps"), lr);
        if (!avg) {            /* TRL's metrics use the summed log-ratios */
            check_stat(cases[c], r, "rewards/chosen", st.rewards_chosen); check_stat(cases[c], r, "rewards/rejected", st.rewards_rejected);
            check_stat(cases[c], r, "rewards/margins", st.rewards_margins); check_stat(cases[c], r, "rewards/accuracies", st.rewards_accuracies);
            check_stat(cases[c], r, "logps/chosen", st.logps_chosen); check_stat(cases[c], r, "logps/rejected", st.logps_rejected);
        }
        ft_params_free(P);
    }
}

TEST(simpo_and_orpo) {
    static const char *cases[] = {"simpo_b2_g0.5", "simpo_b0.1_g0.5_pure", "orpo_b0.1"};
    int c;
    for (c = 0; c < 3; c++) {
        const rec *r = find(cases[c]); ft_params *P; ft_tensor *pc, *pr, *nll, *loss; ft_pref_stats st; ft_pair_logps lp;
        int orpo = c == 2;
        CHECK(r != NULL, "fixture case %s", cases[c]);
        if (!r) continue;
        ft_params_init(&P);
        pc = param(P, "pc", get(r->in, r->nin, "chosen_logps_avg"), NULL); pr = param(P, "pr", get(r->in, r->nin, "rejected_logps_avg"), NULL);
        nll = param(P, "nll", get(r->in, r->nin, "nll"), NULL);
        ft_params_alloc(P);
        fill(pc, get(r->in, r->nin, "chosen_logps_avg"), NULL); fill(pr, get(r->in, r->nin, "rejected_logps_avg"), NULL); fill(nll, get(r->in, r->nin, "nll"), NULL);
        ft_ctx_reset(C);
        memset(&lp, 0, sizeof lp);
        lp.chosen = pc; lp.rejected = pr; lp.nll = nll;
        loss = pair_loss(orpo ? FT_OBJ_ORPO : FT_OBJ_SIMPO, r, &lp, &st);
        CHECK_OK(ft_backward(C, loss));
        check_stat(cases[c], r, "loss", ((float *)loss->data)[0]);
        check_vec(cases[c], "grad chosen", pc->grad, get(r->grad, r->ngrad, "chosen_logps_avg"), NULL);
        check_vec(cases[c], "grad rejected", pr->grad, get(r->grad, r->ngrad, "rejected_logps_avg"), NULL);
        if (orpo) {
            check_vec(cases[c], "grad nll", nll->grad, get(r->grad, r->ngrad, "nll"), NULL);
            check_stat(cases[c], r, "log_odds_ratio", st.log_odds_ratio); check_stat(cases[c], r, "log_odds_chosen", st.log_odds_chosen);
        }
        check_stat(cases[c], r, "rewards/chosen", st.rewards_chosen); check_stat(cases[c], r, "rewards/rejected", st.rewards_rejected);
        check_stat(cases[c], r, "rewards/margins", st.rewards_margins); check_stat(cases[c], r, "rewards/accuracies", st.rewards_accuracies);
        ft_params_free(P);
    }
}

TEST(reward_model) {
    static const char *cases[] = {"reward_m0_c0", "reward_m0.5_c0", "reward_m0_c0.01", "reward_m0.5_c0.01"};
    int c;
    for (c = 0; c < 4; c++) {
        const rec *r = find(cases[c]); ft_params *P; ft_tensor *rc, *rr, *loss; ft_pref_stats st; const vec *mv; float margin[MAXV]; int i;
        CHECK(r != NULL, "fixture case %s", cases[c]);
        if (!r) continue;
        ft_params_init(&P);
        rc = param(P, "rc", get(r->in, r->nin, "rewards_chosen"), NULL); rr = param(P, "rr", get(r->in, r->nin, "rewards_rejected"), NULL);
        ft_params_alloc(P);
        fill(rc, get(r->in, r->nin, "rewards_chosen"), NULL); fill(rr, get(r->in, r->nin, "rewards_rejected"), NULL);
        mv = get(r->in, r->nin, "margin");
        for (i = 0; mv && i < mv->n; i++) margin[i] = (float)mv->v[i];
        ft_ctx_reset(C);
        loss = ft_rm_loss(C, rc, rr, r->margin > 0 && mv ? margin : NULL, r->coef > 0 ? (float)r->coef : 0.0f, &st);
        CHECK_OK(ft_backward(C, loss));
        check_stat(cases[c], r, "loss", ((float *)loss->data)[0]);
        check_vec(cases[c], "grad chosen", rc->grad, get(r->grad, r->ngrad, "rewards_chosen"), NULL);
        check_vec(cases[c], "grad rejected", rr->grad, get(r->grad, r->ngrad, "rewards_rejected"), NULL);
        check_stat(cases[c], r, "accuracy", st.rewards_accuracies);
        ft_params_free(P);
    }
}

TEST(kto) {
    static const char *cases[] = {"kto_b0.1_w1_1", "kto_b0.1_w1_1.33", "kto_b0.1_klclamp"};
    int c;
    for (c = 0; c < 3; c++) {
        const rec *r = find(cases[c]); ft_params *P; ft_tensor *lp, *rp, *klp, *krp, *loss; ft_pref_stats st; const vec *lab; int i, des[MAXV];
        CHECK(r != NULL, "fixture case %s", cases[c]);
        if (!r) continue;
        lab = get(r->in, r->nin, "label");
        for (i = 0; i < lab->n; i++) des[i] = lab->v[i] > 0.5;
        ft_params_init(&P);
        lp = param(P, "lp", get(r->in, r->nin, "logps"), NULL); rp = param(P, "rp", get(r->in, r->nin, "ref_logps"), NULL);
        klp = param(P, "klp", get(r->in, r->nin, "kl_logps"), NULL); krp = param(P, "krp", get(r->in, r->nin, "ref_kl_logps"), NULL);
        ft_params_alloc(P);
        fill(lp, get(r->in, r->nin, "logps"), NULL); fill(rp, get(r->in, r->nin, "ref_logps"), NULL);
        fill(klp, get(r->in, r->nin, "kl_logps"), NULL); fill(krp, get(r->in, r->nin, "ref_kl_logps"), NULL);
        rp->flags &= ~(uint32_t)FT_TENSOR_REQUIRES_GRAD;
        ft_ctx_reset(C);
        loss = ft_kto_loss(C, lp, rp, klp, krp, des, (float)r->beta, (float)r->dw, (float)r->uw, &st);
        CHECK_OK(ft_backward(C, loss));
        check_stat(cases[c], r, "loss", ((float *)loss->data)[0]);
        check_vec(cases[c], "grad logps", lp->grad, get(r->grad, r->ngrad, "logps"), NULL);
        for (i = 0; i < klp->shape[0]; i++) CHECK(klp->grad == NULL || klp->grad[i] == 0, "%s: the KL term is detached", cases[c]);
        check_stat(cases[c], r, "kl", st.kl);
        check_stat(cases[c], r, "rewards/chosen", st.rewards_chosen); check_stat(cases[c], r, "rewards/rejected", st.rewards_rejected);
        check_stat(cases[c], r, "rewards/margins", st.rewards_margins);
        check_stat(cases[c], r, "logps/chosen", st.logps_chosen); check_stat(cases[c], r, "logps/rejected", st.logps_rejected);
        ft_params_free(P);
    }
}

static void tofloat(float *dst, const vec *v) { int i; for (i = 0; v && i < v->n; i++) dst[i] = (float)v->v[i]; }

TEST(grpo_advantages) {
    int c, n = 0;
    for (c = 0; c < NR; c++) {
        const rec *r = &R[c]; float rw[MAXV], adv[MAXV]; ft_rl_stats st; const vec *in;
        if (strcmp(r->kind, "grpo_adv")) continue;
        in = get(r->in, r->nin, "rewards"); tofloat(rw, in);
        ft_grpo_advantages(rw, (int64_t)r->n_prompts, (int64_t)r->G, !strcmp(r->scale, "group") ? FT_ADV_GROUP : !strcmp(r->scale, "batch") ? FT_ADV_BATCH : FT_ADV_NONE, adv, &st);
        check_vec(r->name, "advantages", adv, get(r->out, r->nout, "advantages"), NULL);
        check_stat(r->name, r, "reward", st.reward); check_stat(r->name, r, "reward_std", st.reward_std);
        check_stat(r->name, r, "frac_reward_zero_std", st.frac_reward_zero_std);
        n++;
    }
    CHECK(n == 6, "%d advantage cases", n);
}

TEST(grpo_losses) {
    int c, n = 0;
    for (c = 0; c < NR; c++) {
        const rec *r = &R[c]; ft_params *P; ft_tensor *lp, *loss; ft_grpo_opts o; ft_rl_stats st; int64_t s[2];
        float old[MAXV], ref[MAXV], adv[MAXV], mask[MAXV]; const vec *lpv;
        if (strcmp(r->kind, "grpo")) continue;
        lpv = get(r->in, r->nin, "per_token_logps");
        tofloat(old, get(r->in, r->nin, "old_per_token_logps")); tofloat(ref, get(r->in, r->nin, "ref_per_token_logps"));
        tofloat(adv, get(r->in, r->nin, "advantages")); tofloat(mask, get(r->in, r->nin, "completion_mask"));
        ft_params_init(&P);
        s[0] = get(r->in, r->nin, "advantages")->n; s[1] = lpv->n / s[0];
        lp = ft_params_add(P, "lp", 2, s);
        ft_params_alloc(P); tofloat((float *)lp->data, lpv);
        memset(&o, 0, sizeof o);
        o.beta = (float)r->beta; o.epsilon = (float)r->eps; o.epsilon_high = (float)r->eps_high;
        o.agg = !strcmp(r->loss_type, "grpo") ? FT_GRPO_AGG_GRPO : !strcmp(r->loss_type, "bnpo") ? FT_GRPO_AGG_BNPO : !strcmp(r->loss_type, "dr_grpo") ? FT_GRPO_AGG_DR_GRPO : FT_GRPO_AGG_DAPO;
        o.max_completion_len = (int64_t)r->max_len; o.num_items = (int64_t)r->num_items;
        ft_ctx_reset(C);
        loss = ft_grpo_loss(C, lp, old, ref, adv, mask, &o, &st);
        CHECK_OK(ft_backward(C, loss));
        check_stat(r->name, r, "loss", ((float *)loss->data)[0]);
        check_vec(r->name, "grad logps", lp->grad, get(r->grad, r->ngrad, "per_token_logps"), NULL);
        check_stat(r->name, r, "kl", st.kl);
        check_stat(r->name, r, "clip_ratio/low_mean", st.clip_low); check_stat(r->name, r, "clip_ratio/high_mean", st.clip_high);
        check_stat(r->name, r, "clip_ratio/region_mean", st.clip_region);
        check_stat(r->name, r, "clip_ratio/low_min", st.clip_low_min); check_stat(r->name, r, "clip_ratio/high_max", st.clip_high_max);
        ft_params_free(P); n++;
    }
    CHECK(n == 16, "%d loss cases (grpo, bnpo, dr_grpo, dapo x beta x epsilon_high)", n);
}

TEST(ppo) {
    int c, n = 0;
    for (c = 0; c < NR; c++) {
        const rec *r = &R[c]; ft_params *P; ft_tensor *nl, *vp, *loss; ft_ppo_opts o; ft_ppo_batch b; ft_rl_stats st;
        float lp[MAXV], ref[MAXV], val[MAXV], sc[MAXV], kl[MAXV], rw[MAXV], adv[MAXV], ret[MAXV], f[MAXV];
        unsigned char pad[MAXV], pad1[MAXV]; int64_t sl[MAXV], s[2]; const vec *v; int i;
        if (strcmp(r->kind, "ppo")) continue;
        memset(&o, 0, sizeof o);
        o.kl_coef = (float)r->kl_coef; o.kl_k3 = !strcmp(r->kl_est, "k3"); o.whiten_rewards = r->whiten > 0;
        o.gamma = (float)r->gamma_rl; o.lam = (float)r->lam; o.cliprange = (float)r->cliprange; o.cliprange_value = (float)r->cliprange_value; o.vf_coef = (float)r->vf_coef;
        v = get(r->in, r->nin, "sequence_lengths");
        for (i = 0; i < v->n; i++) sl[i] = (int64_t)v->v[i];
        tofloat(lp, get(r->in, r->nin, "logprobs")); tofloat(ref, get(r->in, r->nin, "ref_logprobs"));
        tofloat(val, get(r->in, r->nin, "values")); tofloat(sc, get(r->in, r->nin, "scores"));
        memset(&b, 0, sizeof b);
        b.B = v->n; b.T = get(r->in, r->nin, "logprobs")->n / v->n; b.seqlen = sl;
        b.logprobs = lp; b.ref = ref; b.values = val; b.scores = sc; b.kl = kl; b.rewards = rw; b.advantages = adv; b.returns = ret; b.pad = pad; b.pad_p1 = pad1;
        ft_ppo_prepare(&b, &o, &st);
        for (i = 0; i < b.B * b.T; i++) f[i] = pad[i];
        check_vec(r->name, "padding_mask", f, get(r->out, r->nout, "padding_mask"), NULL);
        for (i = 0; i < b.B * b.T; i++) f[i] = pad1[i];
        check_vec(r->name, "padding_mask_p1", f, get(r->out, r->nout, "padding_mask_p1"), NULL);
        check_vec(r->name, "kl", kl, get(r->out, r->nout, "kl"), NULL);
        check_vec(r->name, "rewards", rw, get(r->out, r->nout, "rewards"), NULL);
        check_vec(r->name, "returns", ret, get(r->out, r->nout, "returns"), NULL);
        check_vec(r->name, "advantages", adv, get(r->out, r->nout, "advantages"), NULL);
        check_stat(r->name, r, "objective/kl", st.kl); check_stat(r->name, r, "objective/entropy", st.entropy);
        check_stat(r->name, r, "objective/non_score_reward", st.non_score_reward); check_stat(r->name, r, "objective/rlhf_reward", st.rlhf_reward);
        check_stat(r->name, r, "objective/scores", st.scores);
        ft_params_init(&P);
        s[0] = b.B; s[1] = b.T;
        nl = ft_params_add(P, "new_logprobs", 2, s); vp = ft_params_add(P, "vpred", 2, s);
        ft_params_alloc(P);
        tofloat((float *)nl->data, get(r->in, r->nin, "new_logprobs")); tofloat((float *)vp->data, get(r->in, r->nin, "vpred"));
        ft_ctx_reset(C);
        loss = ft_ppo_loss(C, nl, vp, &b, &o, &st);
        CHECK_OK(ft_backward(C, loss));
        check_stat(r->name, r, "loss", ((float *)loss->data)[0]);
        check_stat(r->name, r, "pg_loss", st.pg_loss); check_stat(r->name, r, "vf_loss", st.vf_loss);
        check_stat(r->name, r, "pg_clipfrac", st.pg_clipfrac); check_stat(r->name, r, "vf_clipfrac", st.vf_clipfrac);
        check_stat(r->name, r, "approxkl", st.approxkl); check_stat(r->name, r, "ratio_mean", st.ratio_mean);
        check_vec(r->name, "grad new_logprobs", nl->grad, get(r->grad, r->ngrad, "new_logprobs"), NULL);
        check_vec(r->name, "grad vpred", vp->grad, get(r->grad, r->ngrad, "vpred"), NULL);
        ft_params_free(P); n++;
    }
    CHECK(n == 2, "%d ppo cases", n);
}

int main(void) {
    load("tests/fixtures/trl_losses.txt");
    if (NR == 0) { printf("FAIL - tests/fixtures/trl_losses.txt missing\n"); return 1; }
    ft_ctx_init(&C, NULL);
    RUN(dpo_family);
    RUN(simpo_and_orpo);
    RUN(reward_model);
    RUN(kto);
    RUN(grpo_advantages);
    RUN(grpo_losses);
    RUN(ppo);
    ft_ctx_free(C);
    return ft_test_summary("test_trl");
}
