/* fuzz_regex.c - libFuzzer harness of the regular expressions of the RL rewards: ft_regex_search
   with the input split into a pattern and a text at its first NUL byte (without one: at the
   position byte 0 names), and the same strings through ft_reward_regex and ft_reward_number
   (the last number of a text against an answer's).
   Asserts: ft_regex_search returns 1, 0 or a negative code, and ft_reward_regex agrees with it;
   rewards are 0 or 1; no memory error, no undefined behaviour, no leak. The engine is linear in
   the text: an input that takes it longer than libFuzzer's -timeout (run.sh gives regex 2 s) is
   reported as a timeout. */
#define _POSIX_C_SOURCE 200809L
#define FINETUNE_IMPLEMENTATION
#include "../../finetune.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const unsigned char *nul = (const unsigned char *)memchr(data, 0, size);
    size_t cut;
    char *pattern, *text;
    int found;
    float rw;
    ft_rollout r;
    if (size < 1) return 0;
    if (nul) cut = (size_t)(nul - data);
    else cut = data[0] % size;
    pattern = ft_fuzz_strndup(data, cut);
    text = ft_fuzz_strndup(data + cut + (nul ? 1 : 0), size - cut - (nul ? 1 : 0));
    found = ft_regex_search(pattern, text);
    FT_FUZZ_CHECK(found == 0 || found == 1 || found < 0);
    memset(&r, 0, sizeof r);
    r.text = text;
    r.answer = pattern;
    rw = ft_reward_regex(pattern, &r);
    FT_FUZZ_CHECK(rw == (found == 1 ? 1.0f : 0.0f));
    rw = ft_reward_number(NULL, &r);
    FT_FUZZ_CHECK(rw == 0.0f || rw == 1.0f);
    free(pattern);
    free(text);
    return 0;
}
