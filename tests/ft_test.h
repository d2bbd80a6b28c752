/* ft_test.h - the tiny test runner of finetune.h's tests.
   TEST(name) { CHECK(cond, "fmt", ...); }   main: RUN(name); ... return ft_test_summary("file");
   Each test prints "ok - name" or "FAIL - name"; the summary line "# file: N passed, M failed"
   is read by tests/run.sh, which prints the suite's total as its last line. */
#ifndef FT_TEST_H
#define FT_TEST_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

static int ft_test_passed, ft_test_failed, ft_test_cur_failed;
static int ft_test_total_passed, ft_test_total_failed;     /* over the files of a unity build */

/* FT_TEST_MAIN(test_x) { ... }: the file's main. Where several test files share one translation
   unit (tests/whitebox.c defines FT_TEST_UNITY) it is test_x_main, which whitebox.c's main calls. */
#ifdef FT_TEST_UNITY
#define FT_TEST_MAIN(name) static int name##_main(void)
#else
#define FT_TEST_MAIN(name) int main(void)
#endif

#define TEST(name) static void name(void)
#define CHECK(cond, ...) do {                                                          \
        if (!(cond)) {                                                                 \
            printf("    %s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);        \
            printf(__VA_ARGS__);                                                       \
            printf("\n");                                                              \
            ft_test_cur_failed = 1;                                                    \
        }                                                                              \
    } while (0)
#define CHECK_OK(expr) do {                                                            \
        ft_result r_ = (expr);                                                         \
        CHECK(r_ == FT_OK, "%s -> %s: %s", #expr, ft_result_string(r_), ft_last_error()); \
    } while (0)
#define RUN(name) ft_test_run(#name, name)

static void ft_test_run(const char *name, void (*fn)(void)) {
    ft_test_cur_failed = 0;
    fn();
    if (ft_test_cur_failed) { ft_test_failed++; printf("FAIL - %s\n", name); }
    else { ft_test_passed++; printf("ok - %s\n", name); }
    fflush(stdout);
}

/* prints the file's line and starts the counts again for the next file of a unity build */
static int ft_test_summary(const char *file) {
    int failed = ft_test_failed;
    printf("# %s: %d passed, %d failed\n", file, ft_test_passed, ft_test_failed);
    ft_test_total_passed += ft_test_passed;
    ft_test_total_failed += ft_test_failed;
    ft_test_passed = 0;
    ft_test_failed = 0;
    return failed ? 1 : 0;
}

/* a whole file, NUL-terminated, in memory (NULL if unreadable); *n its size */
static inline unsigned char *ft_test_slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb"); unsigned char *b; long sz;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END); sz = ftell(f); fseek(f, 0, SEEK_SET);
    b = (unsigned char *)malloc((size_t)sz + 1);
    if (!b || fread(b, 1, (size_t)sz, f) != (size_t)sz) { fclose(f); free(b); return NULL; }
    fclose(f); b[sz] = 0; *n = (size_t)sz;
    return b;
}

/* max |a - b| / (atol + rtol |b|) <= 1 for all elements; returns the worst ratio */
static inline double ft_test_close(const float *a, const float *b, long n, double atol, double rtol, long *worst) {
    double w = 0; long i;
    if (worst) *worst = -1;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (!(d <= w)) { w = d; if (worst) *worst = i; }
    }
    return w;
}
#endif
