/* test_trl.c - the preference losses against TRL's own loss code (tests/fixtures/trl_losses.txt,
   written by tools/ref/trl_fixtures.py with TRL 1.16): loss, gradients with respect to the
   log-probs, and the logged rewards. Our math is f32, TRL's f64: tolerance 2e-5 relative + 1e-6.
   Covered: DPO sigmoid, cDPO (label smoothing; TRL <= 0.23's definition), IPO, hinge, SimPO
   (cpo_alpha 0), ORPO, robust DPO, KTO (desirable/undesirable weights, the clamped KL point), the
   reward model with margin and centering. */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include "ft_test.h"

#define MAXV 16
typedef struct { char name[48]; int n; double v[MAXV]; } vec;
typedef struct { char name[64], kind[64], loss_type[64]; double beta, ls, gamma, margin, coef, dw, uw; vec in[16], out[32], grad[16]; int nin, nout, ngrad; } rec;

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

TEST(dpo_family) {
    static const char *cases[] = {"dpo_sigmoid_b0.1", "dpo_cdpo_ls0.1_legacy", "dpo_ipo_b0.1", "dpo_hinge_b0.1", "dpo_robust_ls0.1"};
    int c;
    for (c = 0; c < 5; c++) {
        const rec *r = find(cases[c]); ft_params *P; ft_tensor *pc, *pr, *rc, *rr, *loss; ft_pref_stats st;
        int ipo = !strcmp(r ? r->loss_type : "", "ipo");
        const vec *lc = NULL, *lr = NULL;
        CHECK(r != NULL, "fixture case %s", cases[c]);
        if (!r) continue;
        if (ipo) { lc = get(r->in, r->nin, "chosen_len"); lr = get(r->in, r->nin, "rejected_len"); }   /* IPO averages */
        ft_params_init(&P);
        pc = param(P, "pc", get(r->in, r->nin, "chosen_logps"), lc); pr = param(P, "pr", get(r->in, r->nin, "rejected_logps"), lr);
        rc = param(P, "rc", get(r->in, r->nin, "ref_chosen_logps"), lc); rr = param(P, "rr", get(r->in, r->nin, "ref_rejected_logps"), lr);
        ft_params_alloc(P);
        fill(pc, get(r->in, r->nin, "chosen_logps"), lc); fill(pr, get(r->in, r->nin, "rejected_logps"), lr);
        fill(rc, get(r->in, r->nin, "ref_chosen_logps"), lc); fill(rr, get(r->in, r->nin, "ref_rejected_logps"), lr);
        rc->flags &= ~(uint32_t)FT_TENSOR_REQUIRES_GRAD; rr->flags &= ~(uint32_t)FT_TENSOR_REQUIRES_GRAD;
        ft_ctx_reset(C);
        loss = ft_dpo_loss(C, ipo ? FT_PREF_IPO : !strcmp(r->loss_type, "hinge") ? FT_PREF_HINGE :
                           !strcmp(r->loss_type, "robust") ? FT_PREF_ROBUST : FT_PREF_SIGMOID,
                           pc, pr, rc, rr, (float)r->beta, (float)r->ls, &st);
        CHECK_OK(ft_backward(C, loss));
        check_stat(cases[c], r, "loss", ((float *)loss->data)[0]);
        /* d loss / d sum = d loss / d mean / len for IPO */
        check_vec(cases[c], "grad chosen", pc->grad, get(r->grad, r->ngrad, "chosen_logps"), lc);
        check_vec(cases[c], "grad rejected", pr->grad, get(r->grad, r->ngrad, "rejected_logps"), lr);
        if (!ipo) {            /* TRL's IPO metrics use the summed log-ratios */
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
        const rec *r = find(cases[c]); ft_params *P; ft_tensor *pc, *pr, *nll, *loss; ft_pref_stats st;
        int orpo = c == 2;
        CHECK(r != NULL, "fixture case %s", cases[c]);
        if (!r) continue;
        ft_params_init(&P);
        pc = param(P, "pc", get(r->in, r->nin, "chosen_logps_avg"), NULL); pr = param(P, "pr", get(r->in, r->nin, "rejected_logps_avg"), NULL);
        nll = param(P, "nll", get(r->in, r->nin, "nll"), NULL);
        ft_params_alloc(P);
        fill(pc, get(r->in, r->nin, "chosen_logps_avg"), NULL); fill(pr, get(r->in, r->nin, "rejected_logps_avg"), NULL); fill(nll, get(r->in, r->nin, "nll"), NULL);
        ft_ctx_reset(C);
        loss = orpo ? ft_orpo_loss(C, pc, pr, nll, (float)r->beta, &st) : ft_simpo_loss(C, pc, pr, (float)r->beta, (float)r->gamma, (float)r->ls, &st);
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

int main(void) {
    load("tests/fixtures/trl_losses.txt");
    if (NR == 0) { printf("FAIL - tests/fixtures/trl_losses.txt missing\n"); return 1; }
    ft_ctx_init(&C, NULL);
    RUN(dpo_family);
    RUN(simpo_and_orpo);
    RUN(reward_model);
    RUN(kto);
    ft_ctx_free(C);
    return ft_test_summary("test_trl");
}
