/* fuzz_chat.c - libFuzzer harness of the chat template detection and rendering, ft_chat_apply.
   Byte 0: bit 0 add_generation_prompt; bit 1 the template is built in (bits 2-7 pick one of
   fuzz_common.h's Jinja templates or a name ft_chat_apply knows), else the first piece of the
   input is the template source. The rest is split at NUL bytes into pieces: the template (unless
   built in), then up to 32 messages, each a role byte (system, user, assistant, tool, or an
   empty role) and its content.
   The size query (buf NULL, cap 0), then the call into a buffer of exactly length + 1 bytes, one
   of exactly length bytes and one of half of it.
   Asserts what the header documents: every call returns the same length, the text is
   NUL-terminated when the length < cap, a short buffer holds the first cap bytes of the text, and
   (no NUL in any input string) the text has no NUL inside; no memory error, no undefined
   behaviour, no leak. */
#define _POSIX_C_SOURCE 200809L
#define FINETUNE_IMPLEMENTATION
#include "../../finetune.h"
#include "fuzz_common.h"

static const char *const NAMES[] = {"chatml", "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip", "llama3",
                                    "zephyr", "mistral-v7"};
static const char *const ROLES[] = {"system", "user", "assistant", "tool", ""};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ft_chat_msg msgs[32];
    char *pieces[33];
    int np = 0, nm = 0, i, gen, builtin;
    const char *tmpl;
    size_t pos, start;
    int64_t len, k;
    char *full, *exact, *half;
    if (size < 1) return 0;
    gen = data[0] & 1;
    builtin = (data[0] >> 1) & 1;
    for (pos = start = 1; pos <= size && np < 33; pos++) {
        if (pos == size || data[pos] == 0) {
            pieces[np++] = ft_fuzz_strndup(data + start, pos - start);
            start = pos + 1;
        }
    }
    if (builtin) {
        int t = data[0] >> 2;
        tmpl = t < FT_FUZZ_N_TEMPLATES ? ft_fuzz_templates[t] : NAMES[(t - FT_FUZZ_N_TEMPLATES) % 8];
        i = 0;
    } else {
        tmpl = np > 0 ? pieces[0] : "";
        i = 1;
    }
    for (; i < np && nm < 32; i++) {
        msgs[nm].role = ROLES[(unsigned char)pieces[i][0] % 5];
        msgs[nm].content = pieces[i][0] ? pieces[i] + 1 : pieces[i];
        nm++;
    }
    len = ft_chat_apply(tmpl, msgs, nm, gen, NULL, 0);
    if (len >= 0) {
        full = (char *)malloc((size_t)len + 1);
        FT_FUZZ_MUST(full != NULL);
        k = ft_chat_apply(tmpl, msgs, nm, gen, full, len + 1);
        FT_FUZZ_CHECK(k == len && full[len] == 0 && (int64_t)strlen(full) == len);
        if (len > 0) {
            exact = (char *)malloc((size_t)len);
            half = (char *)malloc((size_t)(len / 2 > 0 ? len / 2 : 1));   /* exactly cap bytes */
            FT_FUZZ_MUST(exact && half);
            k = ft_chat_apply(tmpl, msgs, nm, gen, exact, len);
            FT_FUZZ_CHECK(k == len && memcmp(exact, full, (size_t)len) == 0);
            k = ft_chat_apply(tmpl, msgs, nm, gen, half, len / 2);
            FT_FUZZ_CHECK(k == len && memcmp(half, full, (size_t)(len / 2)) == 0);
            free(exact);
            free(half);
        }
        free(full);
    }
    for (i = 0; i < np; i++) free(pieces[i]);
    return 0;
}
