/* test_llamacpp.c - real models against llama.cpp on the same file: SmolLM2-135M-Instruct (the
   Q4_1 GGUF, $FT_MODEL) and Gemma 3 270M (the pretrained Q4_K_M GGUF with Q5_0 / Q4_K / Q6_K / Q8_0
   tensors, $FT_MODEL_GEMMA3; make test does not set it: without it, or without the file, the Gemma
   part is skipped with a line saying so). The fixtures tests/fixtures/llamacpp_smollm2.bin and
   llamacpp_gemma3.bin come from tools/ref/llamacpp_fixtures.py (its docstring has the format) and
   each holds two llama.cpp references:
     "f32"  llama.cpp on the quantized weights dequantized exactly to F32, F32 KV cache: the same
            arithmetic as ours (weights dequantized, f32 activations). Asserted tightly: logits
            within 1e-2 of the logit range, the same argmax everywhere, identical 64-token greedy
            continuations, perplexity within 0.5% (SmolLM2) / 0.1% (Gemma 3), every per-token NLL
            of the perplexity text within 1e-2 / 2e-2.
            Measured: SmolLM2 3.5e-6 of the range, NLL 3e-5, ppl +0.000%. Gemma 3 1.2e-3 of the range
            (chat pos 2), NLL 4.5e-3, ppl -0.002%: llama.cpp's CPU GELU is a table lookup in fp16
            (GGML_GELU_FP16 in ggml-cpu/vec.h, input and output rounded to fp16), so its "f32"
            is not exact for Gemma's GeGLU; against an f64 numpy forward of the same weights ours
            is within 4.4e-6 of the range and llama.cpp's within 1.2e-3, and the f64 forward with
            the fp16 GELU has llama.cpp's perplexity to 5 digits. Gemma's perplexity text is 546
            tokens: without the 512-token sliding window of its local layers the NLLs past
            position 512 move by up to 1.1 and the perplexity by 0.24%, which both bounds catch.
     "q4_1" / "q4_k_m"  llama.cpp on the quantized file as it runs it: its quantized matmuls round
            the activations to 8 bits (Q8_1 / Q8_0 / Q8_K blocks) and its KV cache is F16. Its
            own f32 run differs from it by up to 4.4% of the logit range for SmolLM2 and 14.4% for
            Gemma 3 (at chat pos 2, where all logits are negative; 3.9% elsewhere; see the fixture
            script's summary), so the bounds are 6% and 20% of the range (about 1.4x that); argmax and
            greedy may differ only at near-ties (the top-2 gap of llama.cpp below the error measured
            at that position; a greedy difference must start at a gap below 0.25); perplexity
            within 0.5% (SmolLM2: measured -0.38%) and 1.5% (Gemma 3: measured -0.94%, llama.cpp's
            own q4_k_m vs f32 -0.95%). This reference depends on how llama.cpp was built (the
            CPU kernels it picks): SmolLM2's fixture made again with the build that made Gemma's
            moves its q4_1 logits by up to 1.3 and its perplexity to 12.925 (from 12.987), and its
            chat continuation's first token then differs from ours at a top-2 gap of 0.35, past
            the 0.25 above; the committed fixture is the older build's.
   Only the public API and the recorded token ids are used for the model; the tokenizer and the
   chat template are checked separately against the recorded ids and prompt text (Gemma 3's file
   has no template: the loader names llama.cpp's built-in "gemma" format, checked here). */
#include "../finetune.h"
#include "ft_test.h"

enum { MAXP = 8, MAXR = 2 };

/* one model: its fixture and the bounds the header comment explains */
typedef struct {
    const char *tag;          /* prefix of the test names ("" for SmolLM2, "gemma3: ") */
    const char *fixture;
    const char *chat;         /* NULL: the file's own chat template; else the llama.cpp built-in
                                 name the loader must give the model (the file has none)     */
    double rel_f32, rel_q;    /* max |logit diff| / logit range vs "f32" and vs the quantized run */
    double gap_q;             /* greedy vs the quantized run: a difference starts at a top-2 gap below this */
    double ppl_f32, ppl_q;    /* relative perplexity difference */
    double nll_f32;           /* max |per-token NLL diff| vs "f32" */
} model_spec;

static const model_spec SMOLLM2 = {"", "tests/fixtures/llamacpp_smollm2.bin", NULL, 1e-2, 0.06, 0.25, 0.005, 0.005, 1e-2};
static const model_spec GEMMA3 = {"gemma3: ", "tests/fixtures/llamacpp_gemma3.bin", "gemma", 1e-2, 0.2, 0.25, 1e-3, 0.015, 2e-2};
static const model_spec *S;

typedef struct { int32_t argmax; float max, range, gap; const float *sub; } pos_rec;
typedef struct {
    char name[32]; char *text; int32_t n; int32_t *ids; int greedy;
    pos_rec *pos[MAXR]; const int32_t *gtok[MAXR]; const float *ggap[MAXR];
} prompt_rec;

static ft_model *M; static ft_ctx *C;
static unsigned char *FIX; static size_t FIXN, OFF; static int BAD;
static int32_t NV, NSUB, NP, NR, NG; static char RNAME[MAXR][16]; static const int32_t *SUB;
static prompt_rec P[MAXP];
static char *TEXT; static int32_t TN; static int32_t *TIDS; static double PPL[MAXR]; static const float *TNLL[MAXR];

/* ---- the fixture ------------------------------------------------------------------------------ */
static const void *take(size_t n) {
    const void *p = FIX + OFF;
    if (BAD || OFF + n > FIXN) { BAD = 1; return NULL; }
    OFF += n; return p;
}
static int32_t take_i32(void) { int32_t v = 0; const void *p = take(4); if (p) memcpy(&v, p, 4); return v; }
static char *take_str(void) {
    int32_t n = take_i32(); const void *p = n >= 0 ? take((size_t)n) : NULL; char *s;
    if (!p) { BAD = 1; return NULL; }
    s = (char *)malloc((size_t)n + 1); memcpy(s, p, (size_t)n); s[n] = 0; return s;
}
/* arrays are 4-byte aligned in the file only by luck: copy them out */
static void *take_copy(size_t n) { const void *p = take(n); void *d = p ? malloc(n ? n : 1) : NULL; if (d) memcpy(d, p, n); return d; }

static void free_fixture(void) {
    int k, r, t;
    for (k = 0; k < MAXP; k++) {
        free(P[k].text); free(P[k].ids);
        for (r = 0; r < MAXR; r++) {
            if (P[k].pos[r]) for (t = 0; t < P[k].n; t++) free((void *)P[k].pos[r][t].sub);
            free(P[k].pos[r]); free((void *)P[k].gtok[r]); free((void *)P[k].ggap[r]);
        }
    }
    for (r = 0; r < MAXR; r++) free((void *)TNLL[r]);
    free(FIX); free((void *)SUB); free(TEXT); free(TIDS);
    memset(P, 0, sizeof P); memset(TNLL, 0, sizeof TNLL); memset(PPL, 0, sizeof PPL);
    FIX = NULL; SUB = NULL; TEXT = NULL; TIDS = NULL; FIXN = OFF = 0; BAD = 0; NV = NSUB = NP = NR = NG = TN = 0;
}

static int load_fixture(const char *path) {
    FILE *f = fopen(path, "rb"); long n; int k, r, t;
    if (!f) return 0;
    fseek(f, 0, SEEK_END); n = ftell(f); fseek(f, 0, SEEK_SET);
    FIX = (unsigned char *)malloc((size_t)n); FIXN = fread(FIX, 1, (size_t)n, f); fclose(f);
    if (FIXN < 8 || memcmp(FIX, "FTLLCPP1", 8) != 0) return 0;
    OFF = 8;
    NV = take_i32(); NSUB = take_i32(); NP = take_i32(); NR = take_i32(); NG = take_i32();
    if (NP > MAXP || NR > MAXR || NR < 2 || NSUB < 1) return 0;
    for (r = 0; r < NR; r++) { char *s = take_str(); if (!s) return 0; snprintf(RNAME[r], sizeof RNAME[r], "%s", s); free(s); }
    SUB = (const int32_t *)take_copy((size_t)NSUB * 4);
    for (k = 0; k < NP && !BAD; k++) {
        prompt_rec *p = &P[k]; char *s = take_str();
        if (!s) return 0;
        snprintf(p->name, sizeof p->name, "%s", s); free(s);
        p->text = take_str(); p->n = take_i32(); p->ids = (int32_t *)take_copy((size_t)p->n * 4); p->greedy = take_i32();
        for (r = 0; r < NR && !BAD; r++) {
            p->pos[r] = (pos_rec *)calloc((size_t)(p->n > 0 ? p->n : 1), sizeof(pos_rec));
            for (t = 0; t < p->n && !BAD; t++) {
                pos_rec *q = &p->pos[r][t]; const float *h;
                q->argmax = take_i32(); h = (const float *)take_copy(12);
                if (!h) return 0;
                q->max = h[0]; q->range = h[1]; q->gap = h[2]; free((void *)h);
                q->sub = (const float *)take_copy((size_t)NSUB * 4);
            }
            if (p->greedy) { p->gtok[r] = (const int32_t *)take_copy((size_t)NG * 4); p->ggap[r] = (const float *)take_copy((size_t)NG * 4); }
        }
    }
    TEXT = take_str(); TN = take_i32(); TIDS = (int32_t *)take_copy((size_t)TN * 4);
    for (r = 0; r < NR && !BAD; r++) {
        const void *d = take(8); if (d) memcpy(&PPL[r], d, 8);
        TNLL[r] = (const float *)take_copy((size_t)(TN - 1) * 4);
    }
    return !BAD && OFF == FIXN;
}

/* ---- helpers ---------------------------------------------------------------------------------- */
static int argmax_row(const float *row, int64_t V) { int64_t i, b = 0; for (i = 1; i < V; i++) if (row[i] > row[b]) b = i; return (int)b; }
/* the largest |logit difference| from a reference position over the recorded ids */
static double sub_err(const float *row, const pos_rec *q) {
    double pa = 0;
    int i;
    for (i = 0; i < NSUB; i++) {
        double d = fabs((double)row[SUB[i]] - q->sub[i]);
        if (d > pa) pa = d;
    }
    return pa;
}
/* a differing argmax at a near-tie: llama.cpp's top-2 gap is within the error measured at this
   position, and our own margin between the two ids is as small */
static int near_tie(const pos_rec *q, const float *row, int am, double pa) {
    return q->gap <= 2 * pa && (double)row[am] - row[q->argmax] <= 2 * pa;
}
static const prompt_rec *find_prompt(const char *name) { int k; for (k = 0; k < NP; k++) if (!strcmp(P[k].name, name)) return &P[k]; return NULL; }

/* ---- tests ------------------------------------------------------------------------------------ */
TEST(tokenizer_gives_llamacpp_ids) {
    const ft_tokenizer *tok = ft_model_tokenizer(M); int k;
    int32_t *got = (int32_t *)malloc((size_t)(TN + 64) * 4); int64_t n;
    for (k = 0; k < NP; k++) {
        n = ft_tokenize(tok, P[k].text, -1, got, TN + 64, 1, 1);
        CHECK(n == P[k].n && memcmp(got, P[k].ids, (size_t)n * 4) == 0, "%s: %lld ids, llama.cpp %d", P[k].name, (long long)n, P[k].n);
    }
    n = ft_tokenize(tok, TEXT, -1, got, TN + 64, 1, 1);
    CHECK(n == TN && memcmp(got, TIDS, (size_t)n * 4) == 0, "text: %lld ids, llama.cpp %d", (long long)n, TN);
    free(got);
}

TEST(chat_template_renders_the_prompt) {
    const prompt_rec *p = find_prompt("chat"); ft_chat_msg msg = {"user", "What is the capital of France?"};
    const char *tmpl = ft_model_chat_template(M);
    char buf[1024]; int64_t n;
    CHECK(p != NULL, "no chat prompt in the fixture");
    if (!p) return;
    if (S->chat) {      /* no template in the file: the loader names llama.cpp's built-in format */
        CHECK(tmpl && strcmp(tmpl, S->chat) == 0, "ft_model_chat_template: %s, want \"%s\"", tmpl ? tmpl : "NULL", S->chat);
        tmpl = S->chat;
    }
    n = ft_chat_apply(tmpl, &msg, 1, 1, buf, sizeof buf);
    CHECK(n > 0 && n < (int64_t)sizeof buf && strcmp(buf, p->text) == 0, "rendered:\n%s\nwant:\n%s", n > 0 ? buf : ft_last_error(), p->text);
}

TEST(logits_match) {
    int k, r, t; int64_t V = ft_model_config_get(M)->n_vocab;
    double worst_abs[MAXR] = {0}, worst_rel[MAXR] = {0}, secs = 0; int agree[MAXR] = {0}, excused[MAXR] = {0}, total = 0, ntok = 0;
    char where[MAXR][64] = {{0}};
    CHECK(V == NV, "n_vocab %lld, fixture %d", (long long)V, NV);
    if (V != NV) return;
    for (k = 0; k < NP; k++) {
        ft_batch b; ft_tensor *y; double t0;
        memset(&b, 0, sizeof b); b.B = 1; b.T = P[k].n; b.ids = P[k].ids;
        ft_ctx_reset(C);
        t0 = ft_time_seconds();
        y = ft_model_forward(C, M, &b);
        secs += ft_time_seconds() - t0; ntok += P[k].n;
        CHECK(y != NULL, "%s: forward: %s", P[k].name, ft_last_error());
        if (!y) continue;
        for (t = 0; t < P[k].n; t++) {
            const float *row = (const float *)y->data + (size_t)t * (size_t)V; int am = argmax_row(row, V);
            total++;
            for (r = 0; r < NR; r++) {
                const pos_rec *q = &P[k].pos[r][t]; double pa = sub_err(row, q);
                if (pa > worst_abs[r]) worst_abs[r] = pa;
                if (pa / q->range > worst_rel[r]) { worst_rel[r] = pa / q->range; snprintf(where[r], sizeof where[r], "%.24s pos %d", P[k].name, t); }
                if (am == q->argmax) agree[r]++;
                else {
                    double ours = (double)row[am] - row[q->argmax];
                    int tie = near_tie(q, row, am, pa);
                    excused[r] += tie;
                    printf("    %s: %s pos %d: argmax %d, llama.cpp %d (its top-2 gap %.4f, our margin %.4f, error here %.4f)%s\n",
                           RNAME[r], P[k].name, t, am, q->argmax, q->gap, ours, pa, tie ? ": a near-tie" : "");
                }
            }
        }
    }
    printf("    %d positions of %d prompts, %.1f ms per forward token (%d threads)\n", total, NP, 1e3 * secs / ntok, ft_ctx_threads(C));
    for (r = 0; r < NR; r++)
        printf("    vs llama.cpp %-4s: max |logit diff| %.2e = %.2e of the logit range (at %s); argmax agrees at %d of %d, %d near-ties\n",
               RNAME[r], worst_abs[r], worst_rel[r], where[r], agree[r], total, excused[r]);
    /* ref 1: llama.cpp computing in f32 what we compute */
    CHECK(worst_rel[1] < S->rel_f32, "vs %s: %.5f of the range", RNAME[1], worst_rel[1]);
    CHECK(agree[1] + excused[1] == total, "vs %s: argmax differs at %d positions that are no near-ties", RNAME[1], total - agree[1] - excused[1]);
    /* ref 0: llama.cpp's 8-bit activations */
    CHECK(worst_rel[0] < S->rel_q, "vs %s: %.5f of the range", RNAME[0], worst_rel[0]);
    CHECK(agree[0] + excused[0] == total, "vs %s: argmax differs at %d positions that are no near-ties", RNAME[0], total - agree[0] - excused[0]);
}

/* token by token with 8-bit activations (ft_ctx_set_q8_dot): each prompt decoded one token at a
   time, so every matmul of the Q4_1 / Q8_0 weights dots 8-bit activations in integers as llama.cpp's
   own run does; its logits against both references with the same bounds as logits_match */
TEST(decode_with_8bit_activations) {
    int k, r, t; int64_t V = ft_model_config_get(M)->n_vocab;
    double worst_rel[MAXR] = {0}; int agree[MAXR] = {0}, excused[MAXR] = {0}, total = 0;
    int old = ft_ctx_set_q8_dot(C, 1);
    for (k = 0; k < NP; k++) {
        ft_kv_cache *kv = NULL;
        CHECK_OK(ft_kv_cache_init(&kv, M, 1, P[k].n));
        if (!kv) continue;
        for (t = 0; t < P[k].n; t++) {
            const float *row; ft_tensor *y; int am;
            ft_ctx_reset(C);
            y = ft_model_decode(C, M, kv, 0, &P[k].ids[t], 1, 1, 1);
            CHECK(y != NULL, "%s pos %d: decode: %s", P[k].name, t, ft_last_error());
            if (!y) break;
            row = (const float *)y->data; am = argmax_row(row, V);
            total++;
            for (r = 0; r < NR; r++) {
                const pos_rec *q = &P[k].pos[r][t]; double pa = sub_err(row, q);
                if (pa / q->range > worst_rel[r]) worst_rel[r] = pa / q->range;
                if (am == q->argmax) agree[r]++;
                else excused[r] += near_tie(q, row, am, pa);
            }
        }
        ft_kv_cache_free(kv);
    }
    ft_ctx_set_q8_dot(C, old);
    for (r = 0; r < NR; r++)
        printf("    vs llama.cpp %-4s: %.2e of the logit range; argmax agrees at %d of %d, %d near-ties\n", RNAME[r], worst_rel[r], agree[r], total, excused[r]);
    /* SmolLM2's weights are all Q4_1 / Q8_0: if its products were f32, they would be 3e-6 from
       llama.cpp's f32 run (logits_match) */
    if (S == &SMOLLM2) CHECK(worst_rel[1] > 1e-3, "vs %s: %.2e of the range: not 8-bit activations", RNAME[1], worst_rel[1]);
    for (r = 0; r < NR; r++) {
        CHECK(worst_rel[r] < S->rel_q, "vs %s: %.5f of the range", RNAME[r], worst_rel[r]);
        CHECK(agree[r] + excused[r] == total, "vs %s: argmax differs at %d positions that are no near-ties", RNAME[r], total - agree[r] - excused[r]);
    }
}

TEST(greedy_continuations) {
    int k, r; int32_t out[256]; float logp[256];
    for (k = 0; k < NP; k++) {
        const prompt_rec *p = &P[k]; const int32_t *pr[1]; int64_t n = p->n, len = 0; ft_kv_cache *kv = NULL; ft_gen_opts go; ft_rng rng; int same;
        if (!p->greedy) continue;
        CHECK_OK(ft_kv_cache_init(&kv, M, 1, n + NG));
        if (!kv) continue;
        memset(&go, 0, sizeof go); go.max_new = NG; go.sample.temperature = 0; pr[0] = p->ids;
        ft_rng_seed(&rng, 1);
        CHECK_OK(ft_generate(C, M, kv, 1, pr, &n, &go, &rng, out, &len, logp));
        CHECK(len == NG, "%s: %lld tokens", p->name, (long long)len);
        for (r = 0; r < NR; r++) {
            for (same = 0; same < NG && same < len && out[same] == p->gtok[r][same]; same++) {}
            printf("    %s vs llama.cpp %-4s: %d of %d greedy tokens identical", p->name, RNAME[r], same, NG);
            if (same < NG) printf(" (first difference: %d vs %d, llama.cpp's top-2 gap there %.4f)", out[same], p->gtok[r][same], p->ggap[r][same]);
            printf("\n");
            if (r == 1) CHECK(same == NG, "%s vs %s: differs at token %d", p->name, RNAME[r], same);
            /* against 8-bit activations: a difference must start at one of its near-ties (a gap
               of at most a few tenths of a logit, well inside the error the logits test accepts) */
            else CHECK(same == NG || p->ggap[r][same] < S->gap_q, "%s vs %s: differs at token %d where its top-2 gap is %.4f",
                       p->name, RNAME[r], same, p->ggap[r][same]);
        }
        ft_kv_cache_free(kv);
    }
}

TEST(perplexity) {
    ft_batch b; ft_tensor *y; int64_t V = ft_model_config_get(M)->n_vocab, t, i; double nll = 0, ppl, worst = 0, t0; int r;
    memset(&b, 0, sizeof b); b.B = 1; b.T = TN; b.ids = TIDS;
    ft_ctx_reset(C);
    t0 = ft_time_seconds();
    y = ft_model_forward(C, M, &b);
    t0 = ft_time_seconds() - t0;
    CHECK(y != NULL, "forward: %s", ft_last_error());
    if (!y) return;
    for (t = 0; t + 1 < TN; t++) {
        const float *row = (const float *)y->data + (size_t)t * (size_t)V; double mx = row[0], s = 0, l;
        for (i = 1; i < V; i++) if (row[i] > mx) mx = row[i];
        for (i = 0; i < V; i++) s += exp((double)row[i] - mx);
        l = mx + log(s) - row[TIDS[t + 1]];
        nll += l;
        if (fabs(l - TNLL[1][t]) > worst) worst = fabs(l - TNLL[1][t]);
    }
    ppl = exp(nll / (double)(TN - 1));
    printf("    %d tokens in one forward: %.2f s\n", TN, t0);
    printf("    max |per-token NLL diff| vs llama.cpp %s: %.5f\n", RNAME[1], worst);
    CHECK(worst < S->nll_f32, "per-token NLL vs %s: %.5f", RNAME[1], worst);
    for (r = 0; r < NR; r++) {
        printf("    perplexity %.5f, llama.cpp %-4s %.5f (%+.3f%%)\n", ppl, RNAME[r], PPL[r], 100 * (ppl - PPL[r]) / PPL[r]);
        CHECK(fabs(ppl - PPL[r]) / PPL[r] < (r == 1 ? S->ppl_f32 : S->ppl_q), "vs %s: ppl %.5f vs %.5f", RNAME[r], ppl, PPL[r]);
    }
    /* the library's own loss agrees with the double log-softmax above */
    {
        int32_t *tg = (int32_t *)malloc((size_t)TN * 4); ft_tensor *l;
        for (t = 0; t < TN; t++) tg[t] = t + 1 < TN ? TIDS[t + 1] : -100;
        l = ft_cross_entropy(C, y, tg, -100);
        CHECK(l != NULL && fabs(exp(((float *)l->data)[0]) - ppl) / ppl < 1e-4, "ft_cross_entropy gives ppl %.5f, double %.5f",
              l ? exp(((float *)l->data)[0]) : 0.0, ppl);
        free(tg);
    }
}

/* multiple choice as lm-evaluation-harness 0.4.13 scores it (tests/fixtures/mc_items.jsonl and
   mc_lmeval.txt from tools/ref/mc_fixtures.py: lm_eval's "hf" model on SmolLM2 saved by
   transformers in float32, whose logits equal ft's on this GGUF bit for bit, tests/test_tokenizer.c):
   each choice's log-likelihood within 1e-4, acc and acc_norm identical; ARC's and PIQA's layouts
   score as the same items written as {"context", "choices", "gold"} */
TEST(mc_scores_equal_lm_eval) {
    ft_mc_set *s = NULL, *l = NULL; ft_eval_mc_result res, rl; size_t n; char *b = (char *)ft_test_slurp("tests/fixtures/mc_lmeval.txt", &n), *p;
    double acc = -1, accn = -1, worst = 0; int items = 0, i, k, nc, gold, same = 1;
    FILE *f;
    CHECK(b != NULL, "tests/fixtures/mc_lmeval.txt is missing (tools/ref/mc_fixtures.py)");
    CHECK_OK(ft_mc_load(&s, "tests/fixtures/mc_items.jsonl"));
    if (!b || !s) { free(b); ft_mc_free(s); return; }
    CHECK_OK(ft_eval_mc(C, M, s, 0, &res));
    p = strstr(b, "acc ");
    if (p) sscanf(p, "acc %lf acc_norm %lf n %d", &acc, &accn, &items);
    CHECK(items == ft_mc_size(s) && items >= 50, "%d items in the fixture, %lld loaded", items, (long long)ft_mc_size(s));
    for (i = 0; i < items && (p = strstr(p + 1, "item ")) != NULL; i++) {
        int id, g, m; const double *ll = ft_mc_item(s, i, &nc, &gold);
        if (sscanf(p, "item %d %d %d%n", &id, &g, &m, &k) != 3 || !ll || m != nc || g != gold || id != i) { same = 0; break; }
        p += k;
        for (k = 0; k < m; k++) { double want = strtod(p, &p); worst = fmax(worst, fabs(ll[k] - want)); }
    }
    printf("    %d items: acc %.4f (lm_eval %.4f), acc_norm %.4f (lm_eval %.4f); max |log-likelihood - lm_eval's| %.2e\n", items, res.acc, acc, res.acc_norm, accn, worst);
    CHECK(same && i == items, "the items' layout differs from the fixture's");
    CHECK(fabs(res.acc - acc) < 1e-9 && fabs(res.acc_norm - accn) < 1e-9 && worst < 1e-4, "scores");
    /* the same two items in ARC's and PIQA's layouts */
    if ((f = fopen("mc_layouts.jsonl", "wb")) != NULL) {
        fputs("{\"context\": \"Question: Which is a color?\\nAnswer:\", \"choices\": [\"blue\", \"chair\"], \"gold\": 0}\n"
              "{\"question\": \"Which is a color?\", \"choices\": {\"text\": [\"blue\", \"chair\"], \"label\": [\"A\", \"B\"]}, \"answerKey\": \"A\"}\n"
              "{\"context\": \"Question: Boil water\\nAnswer:\", \"choices\": [\"heat it in a pot\", \"freeze it\"], \"gold\": 0}\n"
              "{\"goal\": \"Boil water\", \"sol1\": \"heat it in a pot\", \"sol2\": \"freeze it\", \"label\": 0}\n", f);
        fclose(f);
    }
    CHECK_OK(ft_mc_load(&l, "mc_layouts.jsonl"));
    if (l) {
        CHECK_OK(ft_eval_mc(C, M, l, 0, &rl));
        for (i = 0; i < 4; i += 2) {
            const double *a = ft_mc_item(l, i, &nc, NULL), *c = ft_mc_item(l, i + 1, NULL, NULL);
            CHECK(a && c && a[0] == c[0] && a[1] == c[1], "layout of item %d", i + 1);
        }
    }
    ft_mc_free(l); ft_mc_free(s); free(b);
    remove("mc_layouts.jsonl");
}
/* bad items fail naming the file and line */
TEST(mc_bad_items) {
    ft_mc_set *s = NULL; FILE *f = fopen("mc_bad.jsonl", "wb");
    if (f) { fputs("{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"gold\": 0}\n{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"gold\": 2}\n", f); fclose(f); }
    CHECK(ft_mc_load(&s, "mc_bad.jsonl") == FT_ERR_FORMAT && strstr(ft_last_error(), "mc_bad.jsonl:2") && strstr(ft_last_error(), "gold"), "%s", ft_last_error());
    if ((f = fopen("mc_bad.jsonl", "wb")) != NULL) { fputs("{\"text\": \"not an item\"}\n", f); fclose(f); }
    CHECK(ft_mc_load(&s, "mc_bad.jsonl") == FT_ERR_FORMAT && strstr(ft_last_error(), "mc_bad.jsonl:1"), "%s", ft_last_error());
    CHECK(s == NULL, "no set on failure");
    remove("mc_bad.jsonl");
}

/* the five tests on one model; a model that cannot be set up is one failure */
static void run_named(const char *name, void (*fn)(void)) {
    char full[96];
    snprintf(full, sizeof full, "%s%s", S->tag, name);
    ft_test_run(full, fn);
}
#define RUN_M(name) run_named(#name, name)

static void run_model(const model_spec *spec, const char *path) {
    S = spec;
    if (!load_fixture(spec->fixture)) { printf("FAIL - %s%s is missing or malformed (tools/ref/llamacpp_fixtures.py)\n", S->tag, spec->fixture); ft_test_failed++; free_fixture(); return; }
    if (ft_model_load(&M, path, NULL) != FT_OK) { printf("FAIL - %sloading %s: %s\n", S->tag, path, ft_last_error()); ft_test_failed++; free_fixture(); return; }
    if (ft_ctx_init(&C, NULL) != FT_OK) { printf("FAIL - %sft_ctx_init: %s\n", S->tag, ft_last_error()); ft_test_failed++; ft_model_free(M); M = NULL; free_fixture(); return; }
    ft_ctx_set_grad(C, 0);
    RUN_M(tokenizer_gives_llamacpp_ids);
    RUN_M(chat_template_renders_the_prompt);
    RUN_M(logits_match);
    RUN_M(greedy_continuations);
    RUN_M(decode_with_8bit_activations);
    RUN_M(perplexity);
    if (spec == &SMOLLM2) { RUN_M(mc_scores_equal_lm_eval); RUN_M(mc_bad_items); }
    ft_ctx_free(C); ft_model_free(M); C = NULL; M = NULL;
    free_fixture();
}

int main(void) {
    const char *path = getenv("FT_MODEL"), *gemma = getenv("FT_MODEL_GEMMA3");
    FILE *f;
    if (!path) { printf("FAIL - FT_MODEL is not set (the SmolLM2-135M-Instruct Q4_1 GGUF: tools/fetch-model)\n"); return 1; }
    run_model(&SMOLLM2, path);
    /* Gemma 3 270M: only where FT_MODEL_GEMMA3 names the file (make test does not fetch it) */
    if (!gemma || !*gemma) printf("    skipped: the Gemma 3 270M part: FT_MODEL_GEMMA3 is not set (tools/fetch-model gemma3 gets the file and prints its path)\n");
    else if (!(f = fopen(gemma, "rb"))) printf("    skipped: the Gemma 3 270M part: FT_MODEL_GEMMA3=%s cannot be read (tools/fetch-model gemma3 gets the file and prints its path)\n", gemma);
    else { fclose(f); run_model(&GEMMA3, gemma); }
    return ft_test_summary("test_llamacpp");
}
