/* test_peft.c - LoRA / DoRA on the tiny model: identity at init, gradients of A, B and the
   magnitude through the whole frozen model by central differences, merge == unmerged forward,
   switching off gives the base model, and a few AdamW steps that fit a sequence. */
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

static const char *P32 = "build/tiny_peft.gguf";
static ft_ctx *CTX;




TEST(lora_identity_at_init_and_switch_off) {
    ft_model *m; ft_peft *p; ft_lora_opts o; static float base[12 * TINY_V], lora[12 * TINY_V]; int64_t i;
    CHECK_OK(ft_model_load(&m, P32, NULL));
    tiny_logits(CTX, m, base);
    memset(&o, 0, sizeof o); o.r = 4; o.alpha = 8;
    CHECK_OK(ft_lora_attach(&p, m, &o));
    CHECK(ft_params_numel(ft_peft_params(p)) == TINY_L * 4 * ((32 + 32) + (32 + 16) * 2 + (32 + 32) + (32 + 48) * 3), "trainable %lld", (long long)ft_params_numel(ft_peft_params(p)));
    CHECK(ft_lora_scale(p) == 2.0f, "alpha / r");
    tiny_logits(CTX, m, lora);
    CHECK(tiny_maxdiff(base, lora, 12 * TINY_V) == 0, "B = 0: the adapter starts as the identity");
    {
        ft_tensor *A = ft_lora_A(p, 1, FT_SITE_Q);
        float bound = 1.0f / sqrtf(32.0f), mx = 0;
        for (i = 0; i < ft_numel(A); i++) mx = fmaxf(mx, fabsf(((float *)A->data)[i]));
        CHECK(mx <= bound && mx > 0.8f * bound, "A ~ U(-1/sqrt(in), 1/sqrt(in)): max %g bound %g", mx, bound);
    }
    for (i = 0; i < ft_params_count(ft_peft_params(p)); i++) {
        ft_tensor *t = ft_params_get(ft_peft_params(p), (int)i); int64_t j;
        for (j = 0; j < ft_numel(t); j++) ((float *)t->data)[j] += 0.05f * sinf((float)(j + 7 * i));
    }
    tiny_logits(CTX, m, lora);
    CHECK(tiny_maxdiff(base, lora, 12 * TINY_V) > 1e-3, "a trained adapter changes the output");
    ft_peft_set_enabled(p, 0);
    tiny_logits(CTX, m, lora);
    CHECK(tiny_maxdiff(base, lora, 12 * TINY_V) == 0, "switched off: exactly the base model");
    ft_peft_free(p);
    ft_model_free(m);
    o.rslora = 1; o.r = 16; o.alpha = 8;
    CHECK_OK(ft_model_load(&m, P32, NULL));
    CHECK_OK(ft_lora_attach(&p, m, &o));
    CHECK(fabsf(ft_lora_scale(p) - 2.0f) < 1e-6f, "rsLoRA: alpha / sqrt(r)");
    ft_peft_free(p); ft_model_free(m);
}

/* d loss / d (A, B) or d loss / d magnitude (DoRA) through the frozen model, by central differences */
static void gradcheck_adapter(int dora) {
    ft_model *m; ft_peft *p; ft_lora_opts o; ft_params *P; int i, checked = 0; double worst = 0;
    CHECK_OK(ft_model_load(&m, P32, NULL));
    memset(&o, 0, sizeof o); o.r = 3; o.alpha = 6; o.dora = dora;
    CHECK_OK(ft_lora_attach(&p, m, &o));
    P = ft_peft_params(p);
    for (i = 0; i < ft_params_count(P); i++) {                /* move off the B = 0 point */
        ft_tensor *t = ft_params_get(P, i); int64_t j;
        for (j = 0; j < ft_numel(t); j++) ((float *)t->data)[j] += 0.1f * sinf((float)(3 * j + i));
    }
    ft_params_zero_grad(P);
    tiny_loss(CTX, m, 1);
    for (i = 0; i < ft_params_count(P); i += dora ? 1 : 3) {
        ft_tensor *t = ft_params_get(P, i); int64_t j, n = ft_numel(t);
        /* DoRA detaches ||W + sBA|| (as PEFT): the gradients of A and B are by design not those
           of the full function, so only the magnitude is checked here */
        if (dora && !strstr(t->name, "magnitude")) continue;
        for (j = 0; j < n; j += n / 3 + 1) {
            float *x = (float *)t->data + j, x0 = *x, eps = 1e-2f; double lp, lm, fd, an = t->grad[j], d;
            *x = x0 + eps; lp = tiny_loss(CTX, m, 0);
            *x = x0 - eps; lm = tiny_loss(CTX, m, 0);
            *x = x0;
            fd = (lp - lm) / (2 * eps);
            d = fabs(an - fd) / (3e-4 + 3e-3 * fabs(fd));
            worst = fmax(worst, d); checked++;
            CHECK(d <= 1, "%s[%lld]: analytic %.6g numeric %.6g", t->name, (long long)j, an, fd);
        }
    }
    printf("    %s: %d gradients checked, worst error / tolerance %.3f\n", dora ? "DoRA" : "LoRA", checked, worst);
    ft_peft_free(p); ft_model_free(m);
}
TEST(lora_gradients_through_the_model) { gradcheck_adapter(0); }
TEST(dora_gradients_through_the_model) { gradcheck_adapter(1); }

TEST(merge_equals_adapter_forward) {
    int dora;
    for (dora = 0; dora < 2; dora++) {
        ft_model *m; ft_peft *p; ft_lora_opts o; static float a[12 * TINY_V], b[12 * TINY_V], c[12 * TINY_V]; int i;
        CHECK_OK(ft_model_load(&m, P32, NULL));
        memset(&o, 0, sizeof o); o.r = 4; o.dora = dora; o.targets = FT_TARGET_ATTN | FT_TARGET_DOWN;
        CHECK_OK(ft_lora_attach(&p, m, &o));
        for (i = 0; i < ft_params_count(ft_peft_params(p)); i++) {
            ft_tensor *t = ft_params_get(ft_peft_params(p), i); int64_t j;
            for (j = 0; j < ft_numel(t); j++) ((float *)t->data)[j] += 0.1f * cosf((float)(j + i));
        }
        tiny_logits(CTX, m, a);
        CHECK_OK(ft_peft_merge(p));
        tiny_logits(CTX, m, b);
        CHECK(tiny_maxdiff(a, b, 12 * TINY_V) < 2e-5, "%s merged vs adapter: %.3g", dora ? "DoRA" : "LoRA", tiny_maxdiff(a, b, 12 * TINY_V));
        CHECK_OK(ft_peft_unmerge(p));
        tiny_logits(CTX, m, c);
        CHECK(tiny_maxdiff(a, c, 12 * TINY_V) == 0, "unmerge restores exactly");
        ft_peft_free(p); ft_model_free(m);
    }
}

TEST(adamw_fits_a_sequence_with_lora) {
    ft_model *m; ft_peft *p; ft_lora_opts o; ft_optim *opt; ft_optim_opts oo; float l0, l; int s;
    CHECK_OK(ft_model_load(&m, P32, NULL));
    memset(&o, 0, sizeof o); o.r = 8; o.alpha = 16;
    CHECK_OK(ft_lora_attach(&p, m, &o));
    memset(&oo, 0, sizeof oo);
    CHECK_OK(ft_optim_init(&opt, ft_peft_params(p), &oo));
    l0 = tiny_loss(CTX, m, 0);
    for (s = 0; s < 60; s++) {
        ft_params_zero_grad(ft_peft_params(p));
        l = tiny_loss(CTX, m, 1);
        CHECK_OK(ft_optim_step(opt, 1e-2f));
    }
    l = tiny_loss(CTX, m, 0);
    printf("    loss %.3f -> %.3f in 60 AdamW steps on LoRA r=8\n", l0, l);
    CHECK(l < 0.3f * l0, "loss %.3f -> %.3f", l0, l);
    {   /* a NaN gradient leaves every parameter as it was */
        ft_params *P = ft_peft_params(p); ft_tensor *t = ft_params_get(P, 1); float keep = ((float *)t->data)[0];
        t->grad[3] = NAN;
        CHECK(ft_optim_step(opt, 1e-2f) == FT_ERR_NUMERIC && ((float *)t->data)[0] == keep, "NaN gradient refused: %s", ft_last_error());
    }
    ft_optim_free(opt); ft_peft_free(p); ft_model_free(m);
}


TEST(adapter_files_round_trip) {
    ft_model *m; ft_peft *p, *q; ft_lora_opts o; int i, dora; static float a[12 * TINY_V], b[12 * TINY_V];
    for (dora = 0; dora < 2; dora++) {
        CHECK_OK(ft_model_load(&m, P32, NULL));
        memset(&o, 0, sizeof o); o.r = 4; o.alpha = 6; o.dora = dora; o.targets = FT_TARGET_Q | FT_TARGET_K | FT_TARGET_DOWN;
        CHECK_OK(ft_lora_attach(&p, m, &o));
        for (i = 0; i < ft_params_count(ft_peft_params(p)); i++) {
            ft_tensor *t = ft_params_get(ft_peft_params(p), i); int64_t j;
            for (j = 0; j < ft_numel(t); j++) ((float *)t->data)[j] += 0.1f * cosf((float)(j * 3 + i));
        }
        tiny_logits(CTX, m, a);
        if (!dora) CHECK_OK(ft_peft_save(p, "build/tiny_adapter.gguf", FT_FORMAT_LLAMACPP, NULL));
        else CHECK(ft_peft_save(p, "build/tiny_adapter.gguf", FT_FORMAT_LLAMACPP, NULL) == FT_ERR_UNSUPPORTED, "DoRA has no llama.cpp form");
        CHECK_OK(ft_peft_save(p, "build/tiny_peft_dir", FT_FORMAT_PEFT, "tiny-test-llama"));
        {   /* PEFT layout: HF row j of a q_proj B is GGUF row 2j (j < D/2), row j + D/2 is 2j+1 */
            ft_safetensors *st; const char *dt; int64_t sh[8]; int nd; const float *hb;
            ft_tensor *B = ft_lora_B(p, 1, FT_SITE_Q);
            CHECK_OK(ft_safetensors_open(&st, "build/tiny_peft_dir/adapter_model.safetensors"));
            hb = (const float *)ft_safetensors_get(st, "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight", &dt, sh, &nd);
            CHECK(hb && nd == 2 && sh[0] == 32 && sh[1] == 4 && strcmp(dt, "F32") == 0, "q_proj B entry");
            if (hb) {
                CHECK(memcmp(hb + 1 * 4, (float *)B->data + 2 * 4, 16) == 0, "HF row 1 = GGUF row 2");
                CHECK(memcmp(hb + (8 + 4 + 1) * 4, (float *)B->data + (8 + 3) * 4, 16) == 0, "head 1: HF row 4+1 = GGUF row 2*1+1");
            }
            CHECK(ft_safetensors_get(st, "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight", NULL, NULL, NULL) != NULL, "down_proj A");
            CHECK((ft_safetensors_get(st, "base_model.model.model.layers.0.self_attn.k_proj.lora_magnitude_vector", NULL, NULL, NULL) != NULL) == dora, "magnitude iff DoRA");
            ft_safetensors_close(st);
        }
        ft_peft_free(p);
        CHECK_OK(ft_peft_load(&q, m, "build/tiny_peft_dir"));
        tiny_logits(CTX, m, b);
        CHECK(tiny_maxdiff(a, b, 12 * TINY_V) == 0, "PEFT round trip gives the same model");
        if (!dora) {
            ft_peft_free(q);
            CHECK_OK(ft_peft_load(&q, m, "build/tiny_adapter.gguf"));
            tiny_logits(CTX, m, b);
            CHECK(tiny_maxdiff(a, b, 12 * TINY_V) == 0, "llama.cpp GGUF round trip gives the same model");
        }
        ft_peft_free(q); ft_model_free(m);
    }
}

int main(void) {
    ft_ctx_opts o; memset(&o, 0, sizeof o); o.n_threads = 2;
    if (!tiny_model_write(P32, FT_TYPE_F32, 2)) { printf("cannot write the tiny model: %s\n", ft_last_error()); return 1; }
    ft_ctx_init(&CTX, &o);
    RUN(lora_identity_at_init_and_switch_off);
    RUN(lora_gradients_through_the_model);
    RUN(dora_gradients_through_the_model);
    RUN(merge_equals_adapter_forward);
    RUN(adamw_fits_a_sequence_with_lora);
    RUN(adapter_files_round_trip);
    ft_ctx_free(CTX);
    return ft_test_summary("test_peft");
}
