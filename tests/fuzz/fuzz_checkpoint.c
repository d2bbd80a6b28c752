/* fuzz_checkpoint.c - libFuzzer harness of the training checkpoint reader, ft_checkpoint_load: the
   input is written to a file of this process's temporary directory and loaded into what a LoRA
   run on tests/tiny_model.h's model holds (fuzz_common.h's LoRA adapter: its parameters, an AdamW
   optimizer over them, an RNG and the run state), set up once, as ft_train does before resuming.
   Asserts: a failed load changes nothing (parameters, optimizer step, RNG: checked bit for bit
   against a copy); a successful one leaves the parameters' storage usable; no memory error, no
   undefined behaviour, no leak. */
#define _POSIX_C_SOURCE 200809L
#define FINETUNE_IMPLEMENTATION
#include "../../finetune.h"
#include "fuzz_common.h"

static ft_model *model;
static ft_peft *peft;
static ft_optim *optim;
static ft_rng rng;
static char path[1024];
static float *saved;
static int64_t n_saved;

static void cleanup(void) {
    free(saved);
    ft_optim_free(optim);
    ft_peft_free(peft);
    ft_model_free(model);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    model = ft_fuzz_tiny_model();
    peft = ft_fuzz_peft_attach(model, FT_FUZZ_PEFT_LORA);
    FT_FUZZ_MUST(ft_optim_init(&optim, ft_peft_params(peft), NULL) == FT_OK);
    ft_rng_seed(&rng, 42);
    n_saved = ft_params_numel(ft_peft_params(peft));
    saved = (float *)malloc((size_t)n_saved * sizeof(float));
    FT_FUZZ_MUST(saved != NULL);
    ft_fuzz_path(path, sizeof path, "checkpoint.gguf");
    atexit(cleanup);
    return 0;
}

/* every parameter value, back to back, into out */
static void copy_params(ft_params *P, float *out) {
    int i;
    int64_t off = 0;
    for (i = 0; i < ft_params_count(P); i++) {
        ft_tensor *t = ft_params_get(P, i);
        memcpy(out + off, t->data, (size_t)ft_numel(t) * sizeof(float));
        off += ft_numel(t);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ft_params *P = ft_peft_params(peft);
    ft_train_state st;
    ft_rng before = rng;
    int64_t steps = ft_optim_steps(optim);
    ft_result r;
    float *now;
    ft_fuzz_write(path, data, size);
    copy_params(P, saved);
    memset(&st, 0x5A, sizeof st);
    r = ft_checkpoint_load(path, P, optim, &rng, &st);
    if (r != FT_OK) {
        now = (float *)malloc((size_t)n_saved * sizeof(float));
        FT_FUZZ_MUST(now != NULL);
        copy_params(P, now);
        FT_FUZZ_CHECK(memcmp(now, saved, (size_t)n_saved * sizeof(float)) == 0);
        FT_FUZZ_CHECK(ft_optim_steps(optim) == steps);
        FT_FUZZ_CHECK(memcmp(&rng, &before, sizeof rng) == 0);
        free(now);
        return 0;
    }
    ft_fuzz_sink += (unsigned)(st.step + st.epoch + st.data_pos) + (unsigned)st.data_seed;
    ft_fuzz_sink += (unsigned)(st.tokens != 0.0) + (unsigned)(st.obj[3] != 0.0);
    ft_fuzz_sink += (unsigned)ft_optim_steps(optim);
    copy_params(P, saved);
    return 0;
}
