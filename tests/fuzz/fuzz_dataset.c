/* fuzz_dataset.c - libFuzzer harness of the JSONL dataset loader, every format it reads (text,
   instruction, chat messages, preference, KTO, prompts, or detected from the first line's keys):
   the input past two header bytes is written to a file of this process's temporary directory and
   loaded with ft_dataset_load, with the fuzz tokenizers and chat templates of fuzz_common.h.
      byte 0: bits 0-2 the format (ft_data_format; 7 is auto), bit 3 skip_bad, bit 4
              train_on_prompt, bit 5 max_len 24, bit 6 skip_long, bit 7 a system message
      byte 1: bit 0 the tokenizer (byte-level BPE or SentencePiece), bits 1-3 the chat template
   Asserts: a loaded dataset has examples whose ids are inside the vocabulary, loss masks of
   0/1, a prompt no longer than its sequence, no sequence beyond max_len; the counts (tokens,
   skipped, truncated, ft_dataset_without_targets) add up; no memory error, no undefined
   behaviour, no leak. */
#define _POSIX_C_SOURCE 200809L
#define FINETUNE_IMPLEMENTATION
#include "../../finetune.h"
#include "fuzz_common.h"

static ft_tokenizer *tok[2];
static char path[1024];

static void cleanup(void) {
    ft_tokenizer_free(tok[0]);
    ft_tokenizer_free(tok[1]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    tok[0] = ft_fuzz_tokenizer(FT_FUZZ_TOK_SMOLLM);
    tok[1] = ft_fuzz_tokenizer(FT_FUZZ_TOK_SPM);
    ft_fuzz_path(path, sizeof path, "data.jsonl");
    atexit(cleanup);
    return 0;
}

static void check_seq(const ft_tokenizer *t, const int32_t *ids, const unsigned char *loss, int64_t n) {
    int64_t i;
    for (i = 0; i < n; i++) {
        FT_FUZZ_CHECK(ids[i] >= 0 && ids[i] < ft_tokenizer_n_vocab(t));
        FT_FUZZ_CHECK(loss[i] == 0 || loss[i] == 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ft_data_opts o;
    ft_dataset *d;
    const ft_tokenizer *t;
    const char *tmpl;
    int64_t i, tokens = 0;
    if (size < 2) return 0;
    memset(&o, 0, sizeof o);
    o.format = (ft_data_format)((data[0] & 7) == 7 ? FT_DATA_AUTO : (data[0] & 7));
    o.skip_bad = (data[0] >> 3) & 1;
    o.train_on_prompt = (data[0] >> 4) & 1;
    o.max_len = (data[0] >> 5) & 1 ? 24 : 0;
    o.skip_long = (data[0] >> 6) & 1;
    o.system = (data[0] >> 7) & 1 ? "You answer in one line." : NULL;
    t = tok[data[1] & 1];
    tmpl = ft_fuzz_templates[(data[1] >> 1) & 7];
    ft_fuzz_write(path, data + 2, size - 2);
    if (ft_dataset_load(&d, path, t, tmpl, &o) != FT_OK) return 0;
    FT_FUZZ_CHECK(ft_dataset_size(d) > 0);
    FT_FUZZ_CHECK(o.format == FT_DATA_AUTO || ft_dataset_format(d) == o.format);
    ft_fuzz_sink += (unsigned)strlen(ft_data_format_name(ft_dataset_format(d)));
    FT_FUZZ_CHECK(ft_dataset_skipped(d) == 0 || o.skip_bad);
    FT_FUZZ_CHECK(ft_dataset_truncated(d) == 0 || o.max_len > 0);
    i = ft_dataset_without_targets(d, 16);
    FT_FUZZ_CHECK(i >= 0 && i <= ft_dataset_size(d));
    for (i = 0; i < ft_dataset_size(d); i++) {
        const ft_example *e = ft_dataset_get(d, i);
        FT_FUZZ_CHECK(e != NULL && e->n >= 0 && e->n2 >= 0);
        check_seq(t, e->ids, e->loss, e->n);
        if (e->ids2) check_seq(t, e->ids2, e->loss2, e->n2);
        FT_FUZZ_CHECK(e->prompt_len >= 0 && e->prompt_len <= e->n);
        if (o.max_len > 0) FT_FUZZ_CHECK(e->n <= o.max_len && e->n2 <= o.max_len);
        if (e->answer) ft_fuzz_sink += (unsigned)strlen(e->answer);
        tokens += e->n + e->n2;
    }
    FT_FUZZ_CHECK(tokens == ft_dataset_tokens(d));
    ft_dataset_free(d);
    return 0;
}
